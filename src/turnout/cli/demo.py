"""``turnout demo``: two simulated model versions behind the gateway, split 90/10."""

from __future__ import annotations

from typing import Any

from turnout.config import config_from_mapping
from turnout.gateway.run import wait_for_stop_signal
from turnout.gateway.server import serve_gateway
from turnout.simulator import profiles_from_mapping, start_simulator
from turnout.snapshot import build_snapshot

PROFILES: dict[str, Any] = {
    "models": {
        "sim-model-v1": {
            "ttft": {"lognormal": {"median": 120, "sigma": 0.3}},
            "tokens_per_second": 60,
            "output_tokens": 24,
            "answer": "Hello from {model}, the stable version, answering your message: "
            "{last_user_message}. This text is simulated; no model ran.",
        },
        "sim-model-v2": {
            "ttft": {"lognormal": {"median": 80, "sigma": 0.3}},
            "tokens_per_second": 90,
            "output_tokens": 24,
            "answer": "Hello from {model}, the candidate version, answering your message: "
            "{last_user_message}. This text is simulated; no model ran.",
        },
    }
}


def demo_config(v1_url: str, v2_url: str, host: str, port: int) -> dict[str, Any]:
    return {
        "gateway": {"host": host, "port": port},
        "upstreams": [
            {"name": "sim-v1", "base_url": v1_url, "labels": {"provider": "simulator"}},
            {"name": "sim-v2", "base_url": v2_url, "labels": {"provider": "simulator"}},
        ],
        "routes": [
            {
                "name": "default",
                "sticky": {"key": "body:user", "fallback": ["header:x-user-id"]},
                "allow_override": True,
                "variants": [
                    {"name": "stable", "upstream": "sim-v1", "weight": 90, "model": "sim-model-v1"},
                    {
                        "name": "candidate",
                        "upstream": "sim-v2",
                        "weight": 10,
                        "model": "sim-model-v2",
                    },
                ],
            }
        ],
    }


def instructions(base: str) -> str:
    return f"""
turnout demo: gateway on {base}, route "default" splits 90/10 (stable/candidate),
sticky by the body's "user" (or the x-user-id header). Any model name is accepted.

  curl -sN {base}/chat/completions -H 'content-type: application/json' \\
    -H 'x-user-id: alice' -D - \\
    -d '{{"model": "any", "stream": true, "messages": [{{"role": "user", "content": "Hi"}}]}}'

  python3 - <<'PY'
  from openai import OpenAI
  client = OpenAI(base_url="{base}", api_key="unused")
  stream = client.chat.completions.create(
      model="any", user="alice", stream=True,
      messages=[{{"role": "user", "content": "Hi"}}])
  for chunk in stream:
      print(chunk.choices[0].delta.content or "" if chunk.choices else "", end="", flush=True)
  print()
  PY

Response headers x-turnout-route / -variant / -upstream / -request-id say what happened.
Force a variant with the header x-turnout-variant: candidate. Stop with Ctrl-C.
"""


async def run_demo(host: str, port: int) -> None:
    profiles = profiles_from_mapping(PROFILES)
    async with (
        await start_simulator({"sim-model-v1": profiles["sim-model-v1"]}) as v1,
        await start_simulator({"sim-model-v2": profiles["sim-model-v2"]}) as v2,
    ):
        config = config_from_mapping(demo_config(v1.base_url, v2.base_url, host, port))
        gateway, server = await serve_gateway(build_snapshot(config))
        try:
            print(instructions(f"http://{host}:{server.port}/v1"), flush=True)
            await wait_for_stop_signal()
            print("turnout demo: stopping", flush=True)
        finally:
            await server.close()
            await gateway.close()
