"""Simulated OpenAI-compatible upstreams: try turnout, test it and benchmark it without
API keys or a GPU. See docs/simulator.md."""

from turnout.simulator.profiles import Delay, ModelProfile, profiles_from_mapping
from turnout.simulator.server import (
    RunningSimulator,
    build_app,
    run_simulator_forever,
    start_simulator,
)

__all__ = [
    "Delay",
    "ModelProfile",
    "RunningSimulator",
    "build_app",
    "profiles_from_mapping",
    "run_simulator_forever",
    "start_simulator",
]
