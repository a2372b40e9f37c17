from __future__ import annotations

import math
import random
import re
import statistics
from pathlib import Path

import pytest
import yaml

from turnout.exceptions import ConfigError
from turnout.simulator import Delay, ModelProfile, profiles_from_mapping
from turnout.simulator.profiles import Fault


def samples(delay: Delay, n: int = 20_000, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [delay.sample(rng) for _ in range(n)]


def paths(err: pytest.ExceptionInfo[ConfigError]) -> set[str]:
    return {e.path for e in err.value.errors}


# -- Delay ------------------------------------------------------------------------------


def test_fixed_delay_is_exact_and_in_seconds() -> None:
    assert set(samples(Delay.fixed(50), n=100)) == {0.05}
    assert Delay.fixed(0).is_zero
    assert not Delay.fixed(1).is_zero


def test_uniform_delay_stays_in_range_with_the_right_mean() -> None:
    xs = samples(Delay.uniform(10, 30))
    assert min(xs) >= 0.010
    assert max(xs) <= 0.030
    assert statistics.fmean(xs) == pytest.approx(0.020, rel=0.02)
    # Evenly spread: each half of the range gets about half the draws.
    assert sum(x < 0.020 for x in xs) / len(xs) == pytest.approx(0.5, abs=0.02)


def test_normal_delay_matches_mean_and_std() -> None:
    xs = samples(Delay.normal(100, 10))
    assert statistics.fmean(xs) == pytest.approx(0.100, rel=0.01)
    assert statistics.stdev(xs) == pytest.approx(0.010, rel=0.05)


def test_normal_delay_clips_negative_draws_to_zero() -> None:
    xs = samples(Delay.normal(10, 50))
    assert min(xs) == 0.0
    # P(N(10, 50) < 0) = P(Z < -0.2) ~ 0.42
    assert sum(x == 0.0 for x in xs) / len(xs) == pytest.approx(0.42, abs=0.02)


def test_lognormal_delay_matches_median_and_sigma() -> None:
    xs = samples(Delay.lognormal(200, 0.5))
    assert statistics.median(xs) == pytest.approx(0.200, rel=0.03)
    assert statistics.stdev(math.log(x) for x in xs) == pytest.approx(0.5, rel=0.05)
    assert min(xs) > 0


def test_delay_sampling_is_reproducible_with_a_seed() -> None:
    delay = Delay.lognormal(100, 1.0)
    assert samples(delay, n=50, seed=3) == samples(delay, n=50, seed=3)
    assert samples(delay, n=50, seed=3) != samples(delay, n=50, seed=4)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (50, Delay.fixed(50)),
        (12.5, Delay.fixed(12.5)),
        ({"fixed": 80}, Delay.fixed(80)),
        ({"uniform": {"min": 10, "max": 50}}, Delay.uniform(10, 50)),
        ({"uniform": [10, 50]}, Delay.uniform(10, 50)),
        ({"normal": {"mean": 100, "std": 20}}, Delay.normal(100, 20)),
        ({"lognormal": {"median": 200, "sigma": 0.5}}, Delay.lognormal(200, 0.5)),
    ],
)
def test_delay_from_value(value: object, expected: Delay) -> None:
    assert Delay.from_value(value) == expected


@pytest.mark.parametrize(
    ("value", "bad_paths"),
    [
        ("fast", {"ttft"}),
        (True, {"ttft"}),
        ({"fixed": 1, "uniform": [1, 2]}, {"ttft"}),
        ({"gamma": {"k": 1}}, {"ttft.gamma"}),
        ({"fixed": "10ms"}, {"ttft.fixed"}),
        ({"fixed": -5}, {"ttft.fixed.ms"}),
        ({"uniform": {"min": 50, "max": 10}}, {"ttft.uniform.max"}),
        ({"uniform": {"min": 10}}, {"ttft.uniform.max"}),
        ({"normal": {"mean": 10, "sd": 1}}, {"ttft.normal.sd", "ttft.normal.std"}),
        ({"lognormal": {"median": "x", "sigma": -1}}, {"ttft.lognormal.median"}),
        ({"lognormal": {"median": 100, "sigma": -1}}, {"ttft.lognormal.sigma"}),
    ],
)
def test_delay_from_value_errors_carry_paths(value: object, bad_paths: set[str]) -> None:
    with pytest.raises(ConfigError) as err:
        Delay.from_value(value, "ttft")
    assert paths(err) == bad_paths


# -- ModelProfile -----------------------------------------------------------------------


def test_default_profile_is_instant_and_never_fails() -> None:
    profile = ModelProfile()
    assert profile.ttft.is_zero
    assert profile.seconds_per_token == 0.0
    rng = random.Random(0)
    assert all(profile.draw_fault(rng, stream=True) is None for _ in range(100))


@pytest.mark.parametrize(("tps", "expected"), [(0, 0.0), (math.inf, 0.0), (50, 0.02)])
def test_seconds_per_token(tps: float, expected: float) -> None:
    assert ModelProfile(tokens_per_second=tps).seconds_per_token == expected


def test_profile_validation_reports_every_bad_field() -> None:
    with pytest.raises(ConfigError) as err:
        ModelProfile(error_rate=1.5, hang_rate=-0.1, error_status=200, output_tokens=-1)
    assert paths(err) == {"error_rate", "hang_rate", "error_status", "output_tokens"}


def test_answer_is_repeated_and_cut_to_output_tokens() -> None:
    profile = ModelProfile(answer="one two three", output_tokens=7)
    answer = profile.render_answer("m")
    assert answer.words == ("one", "two", "three", "one", "two", "three", "one")
    assert answer.finish_reason == "stop"


def test_max_tokens_caps_the_answer_with_finish_reason_length() -> None:
    profile = ModelProfile(answer="a b c d e f", output_tokens=6)
    assert profile.render_answer("m", max_tokens=4) == (("a", "b", "c", "d"), "length")
    assert profile.render_answer("m", max_tokens=6).finish_reason == "stop"
    assert profile.render_answer("m", max_tokens=100).words == tuple("abcdef")


def test_answer_placeholders_are_filled() -> None:
    profile = ModelProfile(
        answer="{model} heard '{last_user_message}' under '{system_prompt}'", output_tokens=7
    )
    answer = profile.render_answer("sim-1", last_user_message="hi there", system_prompt="be nice")
    assert " ".join(answer.words) == "sim-1 heard 'hi there' under 'be nice'"
    assert profile.answer_is_static is False
    assert ModelProfile(answer="I am {model}").answer_is_static is True


def test_answer_template_is_safe_against_braces_and_unknown_names() -> None:
    profile = ModelProfile(
        answer="{{x}} {unknown} {model.__class__} {0} { {last_user_message}", output_tokens=7
    )
    words = profile.render_answer("m", last_user_message="{model} {oops").words
    assert words == ("{x}", "{unknown}", "{model.__class__}", "{0}", "{", "{model}", "{oops")


def test_empty_answer_has_no_words() -> None:
    assert ModelProfile(answer="{last_user_message}").render_answer("m").words == ()


def test_fault_draws_follow_their_rates_independently() -> None:
    profile = ModelProfile(error_rate=0.3, garbage_rate=0.2)
    rng = random.Random(11)
    draws = [profile.draw_fault(rng, stream=False) for _ in range(20_000)]
    # Error wins over garbage when both hit, so garbage shows up at 0.2 * (1 - 0.3).
    assert draws.count(Fault.ERROR) / len(draws) == pytest.approx(0.3, abs=0.015)
    assert draws.count(Fault.GARBAGE) / len(draws) == pytest.approx(0.14, abs=0.015)


def test_fault_precedence_and_stream_only_death() -> None:
    rng = random.Random(0)
    everything = ModelProfile(hang_rate=1, error_rate=1, garbage_rate=1, die_mid_stream_rate=1)
    assert everything.draw_fault(rng, stream=True) is Fault.HANG
    dying = ModelProfile(die_mid_stream_rate=1)
    assert dying.draw_fault(rng, stream=True) is Fault.DIE_MID_STREAM
    assert dying.draw_fault(rng, stream=False) is None


def test_fault_draws_are_reproducible_with_a_seed() -> None:
    profile = ModelProfile(error_rate=0.5, hang_rate=0.1)

    def run(seed: int) -> list[Fault | None]:
        rng = random.Random(seed)
        return [profile.draw_fault(rng, stream=True) for _ in range(200)]

    assert run(5) == run(5)
    assert run(5) != run(6)


# -- profiles_from_mapping --------------------------------------------------------------


def test_profiles_from_mapping_builds_every_knob() -> None:
    profiles = profiles_from_mapping(
        {
            "models": {
                "gpt-sim-1": {
                    "ttft": {"lognormal": {"median": 200, "sigma": 0.5}},
                    "tokens_per_second": 50,
                    "output_tokens": 12,
                    "answer": "Hello from {model}",
                    "words_per_chunk": 3,
                    "error_rate": 0.1,
                    "error_status": 429,
                    "retry_after": 2,
                    "hang_rate": 0.01,
                    "die_mid_stream_rate": 0.02,
                    "garbage_rate": 0.03,
                    "embedding_dimensions": 16,
                },
                "instant": None,
                "fast": {"tokens_per_second": math.inf, "ttft": 5},
                "inf-as-text": {"tokens_per_second": "inf"},
            },
            "default": {"answer": "fallback"},
        }
    )
    assert profiles["gpt-sim-1"] == ModelProfile(
        ttft=Delay.lognormal(200, 0.5),
        tokens_per_second=50,
        output_tokens=12,
        answer="Hello from {model}",
        words_per_chunk=3,
        error_rate=0.1,
        error_status=429,
        retry_after=2,
        hang_rate=0.01,
        die_mid_stream_rate=0.02,
        garbage_rate=0.03,
        embedding_dimensions=16,
    )
    assert profiles["instant"] == ModelProfile()
    assert profiles["fast"] == ModelProfile(tokens_per_second=math.inf, ttft=Delay.fixed(5))
    assert profiles["inf-as-text"].tokens_per_second == math.inf
    assert profiles["default"] == ModelProfile(answer="fallback")


def test_profiles_from_mapping_reports_all_errors_with_paths() -> None:
    with pytest.raises(ConfigError) as err:
        profiles_from_mapping(
            {
                "models": {
                    "a": {"error_rate": 2, "ttft": {"uniform": {"min": 5, "max": 1}}},
                    "b": {"tokens_per_second": "fast", "colour": "red"},
                    "c": {"output_tokens": 1.5, "answer": 3},
                    "d": "not a mapping",
                },
                "default": {"hang_rate": True},
                "extra": 1,
            }
        )
    assert paths(err) == {
        "models.a.error_rate",
        "models.a.ttft.uniform.max",
        "models.b.tokens_per_second",
        "models.b.colour",
        "models.c.output_tokens",
        "models.c.answer",
        "models.d",
        "default.hang_rate",
        "extra",
    }
    assert "models.a.error_rate: must be a probability" in str(err.value)


def test_profiles_from_mapping_rejects_bad_shapes() -> None:
    with pytest.raises(ConfigError) as err:
        profiles_from_mapping({"models": ["a", "b"]})
    assert paths(err) == {"models"}
    with pytest.raises(ConfigError) as err:
        profiles_from_mapping({"models": {"default": {}}, "default": {}})
    assert paths(err) == {"default"}


def test_profiles_from_mapping_accepts_an_empty_file() -> None:
    assert profiles_from_mapping({}) == {}
    assert profiles_from_mapping({"models": None}) == {}


def test_the_documented_profiles_file_loads() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "simulator.md").read_text()
    match = re.search(r"```yaml\n(.*?)```", doc, re.DOTALL)
    assert match is not None
    profiles = profiles_from_mapping(yaml.safe_load(match.group(1)))
    assert set(profiles) == {"gpt-sim-fast", "gpt-sim-1", "gpt-sim-flaky", "embed-sim", "default"}
    assert profiles["gpt-sim-1"].ttft == Delay.lognormal(200, 0.5)
    assert profiles["gpt-sim-flaky"].retry_after == 2
    assert profiles["default"].ttft == Delay.fixed(20)
