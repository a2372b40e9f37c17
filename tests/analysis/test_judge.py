"""The canary judge: simulated canaries, the decision rule, the overall verdict."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from turnout.analysis.judge import (
    Counts,
    Direction,
    Judgement,
    MetricKind,
    MetricSpec,
    MetricVerdict,
    Samples,
    Status,
    Thresholds,
    Verdict,
    judge,
    judge_metric,
)

CONTINUOUS = MetricKind.CONTINUOUS
RATE = MetricKind.RATE


def latencies(rng: random.Random, n: int, factor: float = 1.0, sigma: float = 0.5) -> list[float]:
    """Lognormal latencies in ms around a 400 ms median, times ``factor``."""
    return [factor * rng.lognormvariate(6.0, sigma) for _ in range(n)]


def hits(rng: random.Random, n: int, rate: float) -> int:
    return sum(rng.random() < rate for _ in range(n))


def latency_spec(**kw: object) -> MetricSpec:
    return MetricSpec("latency", CONTINUOUS, **kw)  # type: ignore[arg-type]


def error_spec(**kw: object) -> MetricSpec:
    return MetricSpec("errors", RATE, **kw)  # type: ignore[arg-type]


def shifted(seed: int, n: int, factor: float, sigma: float = 0.5) -> Samples:
    rng = random.Random(seed)
    return Samples(latencies(rng, n, sigma=sigma), latencies(rng, n, factor, sigma))


# -- simulated canaries ----------------------------------------------------------------


def test_identical_distributions_rarely_fail() -> None:
    # 200 A/A canaries of 500 requests a side. With the default 10% tolerance a false
    # fail needs significance AND a >10% estimate: 1/200 here. With no tolerance and
    # both directions bad it is the plain two-sided test: 14/200 (7%; alpha is 5%, and
    # 1000 further seeds give 51/1000).
    tolerant = latency_spec()
    strict = latency_spec(tolerance=0.0, direction=Direction.EITHER)
    fails_tolerant = fails_strict = 0
    for seed in range(200):
        obs = shifted(seed, 500, 1.0)
        fails_tolerant += judge_metric(tolerant, obs).status is Status.FAIL
        fails_strict += judge_metric(strict, obs).status is Status.FAIL
    assert fails_tolerant <= 2
    assert fails_strict <= 16  # <= 8%: binomial(200, 0.05) exceeds 16 with p ~ 0.02


def test_identical_error_rates_rarely_fail() -> None:
    spec = error_spec(tolerance=0.0, direction=Direction.EITHER)
    fails = 0
    for seed in range(200):
        rng = random.Random(seed)
        n = 3000
        obs = Counts(hits(rng, n, 0.02), n, hits(rng, n, 0.02), n)
        fails += judge_metric(spec, obs).status is Status.FAIL
    assert fails <= 16  # 11/200 with these seeds


@pytest.mark.parametrize(("n", "at_least"), [(200, 45), (300, 47), (500, 49)])
def test_twenty_percent_slower_fails(n: int, at_least: int) -> None:
    # Candidate latencies x1.2, tolerance 10%, lognormal sigma 0.5 (p95/p50 ~ 2.3).
    # Out of 50 canaries: 47 fail at n=200, 49 at 300, 50 at 500.
    spec = latency_spec()
    fails = sum(judge_metric(spec, shifted(s, n, 1.2)).status is Status.FAIL for s in range(50))
    assert fails >= at_least


def test_twenty_percent_slower_on_a_heavy_tail_fails_mostly() -> None:
    # sigma 1.0 (p95/p50 ~ 5): far noisier; 40/50 fail at n=500. The rule trades this
    # power for the A/A rate above; more samples (the controller extends) close the gap.
    spec = latency_spec()
    fails = sum(
        judge_metric(spec, shifted(s, 500, 1.2, sigma=1.0)).status is Status.FAIL for s in range(50)
    )
    assert fails >= 35


@pytest.mark.parametrize("n", [2000, 5000])
def test_doubled_error_rate_fails(n: int) -> None:
    spec = error_spec()
    fails = 0
    for seed in range(40):
        rng = random.Random(seed)
        fails += (
            judge_metric(spec, Counts(hits(rng, n, 0.02), n, hits(rng, n, 0.04), n)).status
            is Status.FAIL
        )
    assert fails >= 35  # 37/40 at n=2000, 40/40 at n=5000


def test_twenty_percent_slower_reason_and_evidence() -> None:
    v = judge_metric(latency_spec(), shifted(1, 400, 1.2))
    assert v.status is Status.FAIL
    assert v.effect is not None and v.effect_low is not None and v.effect_high is not None
    assert v.effect_low < v.effect < v.effect_high
    assert 0.1 < v.effect < 0.3
    assert v.stable is not None and v.candidate is not None and v.candidate > v.stable
    assert v.p_value is not None and v.p_value < 0.05
    assert (v.stable_n, v.candidate_n) == (400, 400)
    assert "95% CI" in v.reason and "tolerance 10.0%" in v.reason and "latency" in v.reason


# -- no data ---------------------------------------------------------------------------


def test_too_few_samples_is_no_data_never_fail() -> None:
    spec = latency_spec(min_samples=50)
    huge_shift = shifted(3, 49, 10.0)
    v = judge_metric(spec, huge_shift)
    assert v.status is Status.NO_DATA
    assert (v.stable_n, v.candidate_n) == (49, 49)
    assert "too few samples" in v.reason
    one_side = Samples(latencies(random.Random(1), 500), [])
    assert judge_metric(spec, one_side).status is Status.NO_DATA
    assert judge_metric(spec, Samples([], [])).status is Status.NO_DATA
    assert judge_metric(spec, None).status is Status.NO_DATA
    rate = error_spec(min_samples=100)
    assert judge_metric(rate, Counts(0, 0, 0, 0)).status is Status.NO_DATA
    assert judge_metric(rate, Counts(1, 500, 99, 99)).status is Status.NO_DATA


def test_missing_or_empty_observations_make_no_data_verdict() -> None:
    specs = [latency_spec(), error_spec()]
    j = judge(specs, {})
    assert j.verdict is Verdict.NO_DATA
    assert j.score == 0.0
    assert [m.status for m in j.metrics] == [Status.NO_DATA, Status.NO_DATA]
    j = judge(specs, {"errors": Counts(0, 0, 0, 0)})
    assert j.verdict is Verdict.NO_DATA


# -- direction and tolerance -----------------------------------------------------------


def test_direction() -> None:
    faster = shifted(5, 400, 0.8)
    assert judge_metric(latency_spec(), faster).status is Status.PASS
    assert "good direction" in judge_metric(latency_spec(), faster).reason
    either = latency_spec(direction=Direction.EITHER)
    assert judge_metric(either, faster).status is Status.FAIL
    decrease = latency_spec(direction=Direction.DECREASE)
    assert judge_metric(decrease, faster).status is Status.FAIL
    assert judge_metric(decrease, shifted(5, 400, 1.2)).status is Status.PASS
    fewer_errors = Counts(80, 2000, 40, 2000)
    assert judge_metric(error_spec(), fewer_errors).status is Status.PASS
    assert judge_metric(error_spec(direction="decrease"), fewer_errors).status is Status.FAIL


def test_small_shift_within_tolerance_passes_at_huge_n() -> None:
    obs = shifted(6, 20_000, 1.05)
    v = judge_metric(latency_spec(tolerance=0.1), obs)
    assert v.status is Status.PASS
    assert v.p_value is not None and v.p_value < 1e-6  # significant, yet within tolerance
    assert "within tolerance" in v.reason
    assert judge_metric(latency_spec(tolerance=0.02), obs).status is Status.FAIL


def test_min_absolute_lets_tiny_rates_pass() -> None:
    tiny = Counts(100, 100_000, 200, 100_000)  # 0.1% -> 0.2%: +100%, significant
    assert judge_metric(error_spec(), tiny).status is Status.FAIL
    floored = error_spec(min_absolute=0.005)
    v = judge_metric(floored, tiny)
    assert v.status is Status.PASS
    assert "small" in v.reason
    assert judge_metric(floored, Counts(60, 3000, 120, 3000)).status is Status.FAIL


def test_absolute_scale_for_scores() -> None:
    rng = random.Random(8)
    # A quality score that can be 0 or negative: compared in its own units.
    stable = [rng.gauss(0.0, 0.1) for _ in range(300)]
    candidate = [rng.gauss(-0.1, 0.1) for _ in range(300)]
    obs = Samples(stable, candidate)
    spec = MetricSpec("quality", CONTINUOUS, Direction.DECREASE, tolerance=0.05, relative=False)
    v = judge_metric(spec, obs)
    assert v.status is Status.FAIL
    assert v.relative is False and v.effect is not None and -0.13 < v.effect < -0.07
    loose = MetricSpec("quality", CONTINUOUS, Direction.DECREASE, tolerance=0.2, relative=False)
    assert judge_metric(loose, obs).status is Status.PASS
    with pytest.raises(ValueError, match="positive"):
        judge_metric(latency_spec(min_samples=1), obs)


def test_zero_stable_errors_gives_unbounded_ratio_as_null() -> None:
    v = judge_metric(error_spec(), Counts(0, 2000, 30, 2000))
    assert v.status is Status.FAIL
    assert v.effect == math.inf
    d = v.to_dict()
    assert d["effect"] is None and d["effect_high"] is None
    json.dumps(d, allow_nan=False)


# -- the overall verdict ---------------------------------------------------------------


def _passing() -> Counts:
    return Counts(40, 2000, 40, 2000)


def _failing() -> Counts:
    return Counts(40, 2000, 120, 2000)


def test_critical_failure_aborts_regardless_of_score() -> None:
    specs = [error_spec(critical=True, weight=0.01)] + [
        MetricSpec(f"m{i}", RATE, weight=10.0) for i in range(10)
    ]
    obs: dict[str, Counts | Samples] = {f"m{i}": _passing() for i in range(10)}
    obs["errors"] = _failing()
    j = judge(specs, obs)
    assert j.verdict is Verdict.FAIL
    assert j.aborted_by == "errors"
    assert j.score > 99.0


def test_score_weights_and_thresholds() -> None:
    specs = [MetricSpec(f"m{i}", RATE, weight=w) for i, w in enumerate([1.0, 1.0, 1.0, 1.0, 1.0])]
    obs: dict[str, Counts | Samples] = {f"m{i}": _passing() for i in range(5)}
    assert judge(specs, obs) == Judgement(
        Verdict.PASS, 100.0, judge(specs, obs).metrics, aborted_by=None
    )
    obs["m0"] = _failing()
    j = judge(specs, obs)
    assert (j.verdict, j.score, j.aborted_by) == (Verdict.MARGINAL, 80.0, None)
    obs["m1"] = _failing()
    assert judge(specs, obs).verdict is Verdict.FAIL  # 60
    assert judge(specs, obs, Thresholds(pass_score=60.0, marginal_score=50.0)).verdict is (
        Verdict.PASS
    )
    del obs["m1"]  # no_data leaves the denominator: 3 of 4 pass
    j = judge(specs, obs)
    assert j.score == 75.0 and j.verdict is Verdict.MARGINAL


def test_critical_metric_without_data_is_no_data() -> None:
    specs = [error_spec(critical=True), MetricSpec("other", RATE)]
    j = judge(specs, {"other": _passing()})
    assert (j.verdict, j.score) == (Verdict.NO_DATA, 100.0)
    # A critical failure still wins over a critical metric with no data.
    specs.append(MetricSpec("gate", RATE, critical=True))
    j = judge(specs, {"other": _passing(), "gate": _failing()})
    assert (j.verdict, j.aborted_by) == (Verdict.FAIL, "gate")


def test_judge_is_deterministic_and_json_friendly() -> None:
    specs = [latency_spec(), error_spec(), MetricSpec("tokens", CONTINUOUS, min_samples=5)]
    obs = {
        "latency": shifted(2, 300, 1.3),
        "errors": Counts(10, 300, 12, 300),
        "tokens": Samples([1.0, 2.0], [3.0]),
        "not-a-spec": Counts(1, 1, 1, 1),  # ignored
    }
    j = judge(specs, obs)
    assert j == judge(specs, obs)
    d = j.to_dict()
    round_trip = json.loads(json.dumps(d, allow_nan=False))
    assert round_trip == d
    assert d["verdict"] == "fail" and type(d["verdict"]) is str
    metrics = d["metrics"]
    assert isinstance(metrics, list) and [m["status"] for m in metrics] == [
        "fail",
        "pass",
        "no_data",
    ]
    for m in metrics:
        assert all(v is None or type(v) in (str, int, float, bool) for v in m.values())
    assert isinstance(j.metrics[0], MetricVerdict)


statuses = st.sampled_from(["pass", "fail", "none", "tiny"])


@given(st.lists(st.tuples(statuses, st.floats(0.1, 10.0), st.booleans()), min_size=1, max_size=8))
def test_verdict_follows_the_metrics(plan: list[tuple[str, float, bool]]) -> None:
    specs, obs = [], {}
    for i, (kind, weight, critical) in enumerate(plan):
        name = f"m{i}"
        specs.append(MetricSpec(name, RATE, weight=weight, critical=critical))
        if kind == "pass":
            obs[name] = _passing()
        elif kind == "fail":
            obs[name] = _failing()
        elif kind == "tiny":
            obs[name] = Counts(0, 10, 5, 10)
    j = judge(specs, obs)
    assert 0.0 <= j.score <= 100.0
    judged = [(k, w) for k, w, _ in plan if k in ("pass", "fail")]
    if judged:
        passed = sum(w for k, w in judged if k == "pass")
        assert j.score == pytest.approx(100 * passed / sum(w for _, w in judged))
    critical_fail = next((f"m{i}" for i, (k, _, c) in enumerate(plan) if c and k == "fail"), None)
    assert j.aborted_by == critical_fail
    if critical_fail:
        assert j.verdict is Verdict.FAIL
    elif not judged or any(c and k in ("none", "tiny") for k, _, c in plan):
        assert j.verdict is Verdict.NO_DATA
    else:
        expected = (
            Verdict.PASS if j.score >= 95 else Verdict.MARGINAL if j.score >= 75 else Verdict.FAIL
        )
        assert j.verdict is expected


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"tolerance": -0.1}, "tolerance"),
        ({"tolerance": math.nan}, "tolerance"),
        ({"weight": 0.0}, "weight"),
        ({"weight": -1.0}, "weight"),
        ({"min_samples": 0}, "min_samples"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"min_absolute": -0.01}, "min_absolute"),
        ({"direction": "sideways"}, "direction must be one of increase, decrease, either"),
        ({"kind": "histogram"}, "kind must be one of"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_specs_are_rejected(kw: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"name": "latency", "kind": CONTINUOUS, **kw}
    with pytest.raises(ValueError, match=message):
        MetricSpec(**args)  # type: ignore[arg-type]


def test_plain_strings_become_enums() -> None:
    spec = MetricSpec("errors", "rate", "either")  # type: ignore[arg-type]
    assert spec.kind is RATE and spec.direction is Direction.EITHER


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate metric names: errors"):
        judge([error_spec(), error_spec(weight=2.0)], {})


def test_mismatched_observations_are_rejected() -> None:
    with pytest.raises(ValueError, match="'errors' is rate: needs a Counts"):
        judge([error_spec()], {"errors": Samples([1.0], [1.0])})
    with pytest.raises(ValueError, match="'latency' is continuous: needs a Samples"):
        judge([latency_spec()], {"latency": Counts(1, 2, 1, 2)})


@pytest.mark.parametrize("counts", [(3, 2, 0, 1), (-1, 2, 0, 1), (0, 1, 0, -1)])
def test_bad_counts_are_rejected(counts: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError, match="hits <= n"):
        Counts(*counts)


@pytest.mark.parametrize(("pass_score", "marginal"), [(70.0, 80.0), (101.0, 75.0), (95.0, -1.0)])
def test_bad_thresholds_are_rejected(pass_score: float, marginal: float) -> None:
    with pytest.raises(ValueError, match="marginal_score"):
        Thresholds(pass_score=pass_score, marginal_score=marginal)
