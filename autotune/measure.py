"""Timing: warm-up, repeats, median and spread; BLAS in the same process at the same threads.

OpenBLAS worker threads spin for about 0.1 s after a call and slow a kernel timed right after,
so comparisons interleave the contenders and pause after every BLAS call.
"""
import contextlib
import os
import statistics
import time
from dataclasses import dataclass

import numba
import threadpoolctl

BLAS_SETTLE_S = 0.3


@dataclass(frozen=True)
class Timing:
    median: float  # seconds
    low: float  # 25th percentile
    high: float  # 75th percentile
    repeats: int

    @classmethod
    def of(cls, samples):
        samples = sorted(samples)
        quartile = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
        return cls(statistics.median(samples), quartile(0.25), quartile(0.75), len(samples))

    def gflops(self, flops):
        return flops / self.median / 1e9


@contextlib.contextmanager
def thread_count(n):
    """Run numba kernels and BLAS with `n` threads."""
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        with threadpoolctl.threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(previous)


def seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_call(fn, budget_s=1.0, min_repeats=3, max_repeats=20, cutoff_s=None):
    """Median of repeats after one warm-up call; as many repeats as fit the budget.
    A warm-up slower than `cutoff_s` is the only sample: no need to time a loser precisely."""
    first = seconds(fn)
    if cutoff_s is not None and first > cutoff_s:
        return Timing.of([first])
    repeats = int(max(min_repeats, min(max_repeats, budget_s / max(first, 1e-9))))
    return Timing.of([seconds(fn) for _ in range(repeats)])


def compare(contenders, rounds=5, blas_names=()):
    """Interleaved timing of {name: fn}. Each round times every contender over a short burst of
    back-to-back calls (so small shapes are timed warm, not waking threads); medians of rounds."""
    calls = {name: _burst_length(fn) for name, fn in contenders.items()}
    samples = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            samples[name].append(seconds(lambda: [fn() for _ in range(calls[name])]) / calls[name])
            if name in blas_names:
                time.sleep(BLAS_SETTLE_S)
    return {name: Timing.of(s) for name, s in samples.items()}


def _burst_length(fn, burst_s=0.05):
    fn()  # warm-up
    return max(1, min(1000, int(burst_s / max(seconds(fn), 1e-7))))


def blas_info():
    """Which BLAS numpy runs here and whether the OpenBLAS kernel was forced by the environment."""
    info = next((i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"), {})
    return {
        "library": info.get("internal_api", "unknown"),
        "version": info.get("version"),
        "architecture": info.get("architecture"),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
    }

