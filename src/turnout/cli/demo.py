"""``turnout demo``: two simulated model versions behind the gateway, split 90/10."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from turnout.config import config_from_mapping
from turnout.serve import Addresses, serve_one
from turnout.simulator import profiles_from_mapping, start_simulator

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


def instructions(base: str, admin_port: int) -> str:
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
Force a variant with the header x-turnout-variant: candidate.
Per-variant numbers:  turnout stats --admin-url http://127.0.0.1:{admin_port}
                      curl -s http://127.0.0.1:{admin_port}/metrics
Stop with Ctrl-C.
"""


async def run_demo(host: str, port: int, admin_port: int) -> None:
    profiles = profiles_from_mapping(PROFILES)
    async with (
        await start_simulator({"sim-model-v1": profiles["sim-model-v1"]}) as v1,
        await start_simulator({"sim-model-v2": profiles["sim-model-v2"]}) as v2,
    ):
        with tempfile.TemporaryDirectory(prefix="turnout-demo-") as store_dir:
            config = config_from_mapping(demo_config(v1.base_url, v2.base_url, host, port))
            at = Addresses(host, port, "127.0.0.1", admin_port)

            def ready(bound: int) -> None:
                print(instructions(f"http://{host}:{bound}/v1", admin_port), flush=True)

            await serve_one(config, Path(store_dir), at, source="demo", on_ready=ready)
            print("turnout demo: stopped", flush=True)
