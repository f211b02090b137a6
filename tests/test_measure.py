"""Decisions with confidence, checked with a fake timer of known noise: no real kernel is timed."""
import time

import numpy as np
import pytest

from autotune import machine, measure


def fake_rounds(speedup, noise, rounds=9, drift=0.3, seed=0):
    """Timings of a and b over paired rounds on a drifting machine: b takes `speedup` times a's time,
    each sample off by `noise` (relative, Gaussian), and both slowed alike by a drift of up to 30%."""
    rng = np.random.default_rng(seed)
    machine = 1 + drift * np.sin(np.arange(rounds))  # the slow part both share
    a = machine * (1 + noise * rng.standard_normal(rounds))
    b = speedup * machine * (1 + noise * rng.standard_normal(rounds))
    return measure.Timing.of(list(a)), measure.Timing.of(list(b))


@pytest.mark.parametrize("seed", range(5))
def test_one_percent_is_within_noise(seed):
    a, b = fake_rounds(1.01, noise=0.01, seed=seed)
    assert measure.speedup(a, b).verdict() == "within noise"


@pytest.mark.parametrize("seed", range(5))
def test_twenty_percent_is_faster_and_the_reverse_slower(seed):
    a, b = fake_rounds(1.20, noise=0.03, seed=seed)
    assert measure.speedup(a, b).verdict() == "faster"
    assert measure.speedup(b, a).verdict() == "slower"


def test_a_drift_larger_than_the_difference_cancels_in_paired_rounds():
    """A 30% drift swamps a 5% difference between medians of separate runs; paired ratios see it."""
    a, b = fake_rounds(1.05, noise=0.002, drift=0.3, rounds=9)
    result = measure.speedup(a, b)
    assert result.verdict() == "faster" and abs(result.median - 1.05) < 0.01
    assert abs(b.median / a.median - 1.05) > abs(result.median - 1.05)


def test_compare_interleaves_in_a_new_order_every_round():
    calls = []

    def contender(name):
        def call():
            calls.append(name)
            time.sleep(0.05)  # one call fills a burst: the calls list is the order of the bursts
        return call

    timings = measure.compare({name: contender(name) for name in "abcd"}, rounds=6, seed=1)
    assert all(t.rounds == 6 for t in timings.values())
    timed = calls[-48:]  # 6 rounds of 4 bursts, each burst one untimed call (wake) and one timed
    assert all(timed[i] == timed[i + 1] for i in range(0, 48, 2))
    bursts = timed[::2]
    rounds = [tuple(bursts[i:i + 4]) for i in range(0, 24, 4)]
    assert all(sorted(r) == list("abcd") for r in rounds)  # every contender once per round
    assert len(set(rounds)) > 1  # not the same order every round


def test_every_burst_starts_awake_and_long_calls_are_not_repeated():
    """After a pause numba's threads ran their first two calls 21x and 15x slow (docs/wake_stall.py)."""
    calls = []
    measure.wake(lambda: calls.append(1), once=0.001)
    assert len(calls) == round(measure.WAKE_S / 0.001)  # WAKE_S of 1 ms calls
    measure.wake(lambda: calls.append(2), once=1.0)
    assert 2 not in calls
    measure.wake(lambda: calls.append(3), once=0.1)
    assert calls.count(3) == 1


def test_a_burst_runs_burst_s_of_calls_however_short_they_are():
    """Trials and comparisons share one rule: a 10 us call once got 10 ms bursts in comparisons
    (capped at 1000 calls) and 50 ms in trials."""
    assert measure.burst_calls(1e-5) == round(measure.BURST_S / 1e-5)
    assert measure.burst_calls(1.0) == 1


def test_the_final_comparison_times_blas_on_every_core_beside_a_one_thread_kernel(monkeypatch):
    """BLAS once ran at the best finalist's thread count: beside a 1-thread finalist it was timed on
    one core, and a 2-thread kernel was stored as 1.93x faster than it."""
    import threadpoolctl

    from autotune.ops import KERNELS, Problem

    limits = []
    monkeypatch.setattr(measure, "compare", lambda contenders, **options: limits.extend(
        info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"))
    measure.side_by_side(KERNELS["forward"], Problem("forward", 4, 3, 2), {"a kernel": (1, lambda *arrays: None)},
                         budget_s=1.0)
    assert limits and set(limits) == {machine.max_threads()}


def test_the_final_comparison_pauses_after_every_contender_not_only_blas(monkeypatch):
    """numba's threads spin after a kernel too: a BLAS burst right after one ran 5-20% slow."""
    from autotune.ops import KERNELS, Problem

    seen = {}
    monkeypatch.setattr(measure, "compare", lambda contenders, **options: seen.update(
        names=set(contenders), settle_after=set(options["settle_after"])))
    kernel = KERNELS["forward"]
    measure.side_by_side(kernel, Problem("forward", 4, 3, 2), {"a kernel": (1, lambda *arrays: None)}, budget_s=1.0)
    assert seen["names"] == {"a kernel", "blas", "numpy"} and seen["settle_after"] == seen["names"]
