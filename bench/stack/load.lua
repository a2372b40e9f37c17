-- wrk load for the stack bench: POST an OpenAI chat body, vary x-user-id per request.
-- Usage: wrk ... -s load.lua URL -- <stream 0|1> <distinct users>
-- Requests are prebuilt in init() so request() costs wrk next to nothing.
-- done() prints one line "BENCH_JSON {...}" with counts and latency percentiles (microseconds).

local reqs, n, i = {}, 0, 0

function init(args)
  local stream = (args[1] == "1") and "true" or "false"
  n = tonumber(args[2] or "10000")
  local body = '{"model":"gpt-4o-mini","messages":['
    .. '{"role":"system","content":"You are a helpful assistant."},'
    .. '{"role":"user","content":"Summarise the plot of Hamlet in two sentences."}],'
    .. '"temperature":0.7,"max_tokens":128,"stream":' .. stream .. '}'
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer sk-bench-000000000000",
  }
  for k = 0, n - 1 do
    headers["x-user-id"] = "user-" .. k
    reqs[k] = wrk.format("POST", nil, headers, body)
  end
end

function request()
  local r = reqs[i]
  i = i + 1
  if i >= n then i = 0 end
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  local out = string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
    .. '"latency_us":{"min":%d,"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max)
  io.write("BENCH_JSON " .. out .. "\n")
end
