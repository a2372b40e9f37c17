"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from turnout.simulator import ModelProfile, RunningSimulator, start_simulator


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    profiles = {
        "m-stable": ModelProfile(answer="stable answer to {last_user_message}", output_tokens=20),
        "m-canary": ModelProfile(answer="canary answer to {last_user_message}", output_tokens=20),
    }
    async with await start_simulator(profiles, seed=7) as s:
        yield s
