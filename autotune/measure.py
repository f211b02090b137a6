"""Timing on a noisy machine: interleaved rounds, paired ratios, and decisions with confidence.

These 2-core machines drift by 10-30% over minutes (other tenants, clocks); a slow drift hits
contenders timed in the same short window alike. So nothing is compared across separate runs:
contenders are timed in rounds, each round one burst per contender in a fresh random order
(random interleaving), and a comparison is the per-round ratio of two contenders, whose median
and bootstrap interval say how much faster one is and whether the difference beats the noise.
OpenBLAS worker threads spin for about 0.1 s after a call and slow what runs next: every BLAS
call is followed by a pause. After a pause, threads run their first calls slow: a few untimed
calls precede every timed burst (wake). And OpenBLAS runs small products faster once it has made a
large one, so every process makes large calls before its first timing (warm_blas).
"""
import contextlib
import math
import os
import random
import statistics
import time
from dataclasses import dataclass

import numba
import numpy as np
import threadpoolctl

from autotune import machine

BLAS_SETTLE_S = 0.3
NOISE_THRESHOLD = 0.02  # a difference under 2% is never acted on (criterion.rs's default)
CONFIDENCE = 0.95  # of the bootstrap interval of a paired ratio
BOOTSTRAP_SAMPLES = 2000
BURST_S = 0.05  # a contender's share of a round: back-to-back calls of at least this long
FINAL_MIN_ROUNDS = 6  # a paired interval needs a few rounds (6 of 6 the same way: p = 0.03)
WAKE_S = 0.03  # untimed calls before each burst (see wake)
WAKE_MAX_S = 0.5  # a call longer than this is not repeated to wake: its first call's few ms are < 1% of it


@dataclass(frozen=True)
class Timing:
    median: float  # seconds per call
    low: float  # 25th percentile
    high: float  # 75th percentile
    samples: tuple  # seconds per call, one per round, in round order

    @classmethod
    def of(cls, samples):
        ordered = sorted(samples)
        quartile = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]
        return cls(statistics.median(ordered), quartile(0.25), quartile(0.75), tuple(samples))

    @property
    def rounds(self):
        return len(self.samples)

    def gflops(self, flops):
        return flops / self.median / 1e9


@dataclass(frozen=True)
class Speedup:
    """How many times faster `a` ran than `b` in paired rounds (b's time / a's time per round):
    the median ratio and its bootstrap interval."""
    median: float
    low: float
    high: float
    rounds: int

    def verdict(self, threshold=NOISE_THRESHOLD):
        """"faster" or "slower" when the interval excludes 1 and the median differs by more than the
        noise threshold; else "within noise"."""
        if self.low > 1 and self.median > 1 + threshold:
            return "faster"
        if self.high < 1 and self.median < 1 / (1 + threshold):
            return "slower"
        return "within noise"

    def describe(self):
        return f"{self.median:.3f}x ({CONFIDENCE:.0%} interval {self.low:.3f}-{self.high:.3f}, {self.rounds} rounds)"


def speedup(a, b, seed=0):
    """Speedup of Timing `a` over Timing `b`, paired by round (the rounds both ran)."""
    paired = min(a.rounds, b.rounds)  # compare's extra rounds may have skipped one of them
    ratios = np.array(b.samples[:paired]) / np.array(a.samples[:paired])
    rng = np.random.default_rng(seed)
    medians = np.median(ratios[rng.integers(0, len(ratios), (BOOTSTRAP_SAMPLES, len(ratios)))], axis=1)
    tail = (1 - CONFIDENCE) / 2
    return Speedup(float(np.median(ratios)), float(np.quantile(medians, tail)), float(np.quantile(medians, 1 - tail)),
                   len(ratios))


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


def seconds(fn, calls=1):
    """Seconds per call of `calls` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def settle():
    """Let OpenBLAS's (and numba's) worker threads stop spinning before anything else is timed."""
    time.sleep(BLAS_SETTLE_S)


def wake(fn, once):
    """Untimed calls of `fn` (`once` seconds each) for WAKE_S, at least one, before a burst.

    After a pause, threads run their first calls slow (`python docs/wake_stall.py`, Zen 3, 2026-12-03
    06:35 UTC): at 4,64,192,192 the forward's first call took about 4x its steady time and calls 3-8
    about 2x, on numba's OpenMP threads, OpenBLAS's and PyTorch's alike, 3.5-7.5 ms in all; where
    the threads had run only 8 calls between pauses, numba's first two took 21x and 15x (10 ms),
    and PyTorch's at 4,64,48,48 250x and 135x (11.6 ms); at 4,1024,768,768 the first call 1.1x.
    Every burst follows a pause (settle), so a 50 ms burst could read 20% slow, by a different
    amount for each thread pool. A loop calling an op back to back never pauses: each contender
    is timed awake."""
    for _ in range(wake_calls(once)):
        fn()


def wake_calls(once):
    """How many untimed calls wake precedes a burst of `once`-second calls with."""
    return 0 if once > WAKE_MAX_S else max(1, math.ceil(WAKE_S / max(once, 1e-7)))


def call_seconds(fn):
    """Seconds of one call of `fn`, its threads awake (wake)."""
    first = seconds(fn)
    wake(fn, first)
    return seconds(fn)


def burst_calls(once):
    """How many back-to-back calls of `once` seconds make a timed burst: BURST_S of them, at least one."""
    return max(1, int(BURST_S / max(once, 1e-7)))


_blas_warmed = False


def warm_blas():
    """Once per process, a few large sgemm calls through each OpenBLAS this package times (numpy's,
    which the loaders' compiled BLAS calls too, and scipy's, the "BLAS beta" contender), then a pause.

    OpenBLAS runs small products faster once it has made a large one: at 1024x192x192 a generated
    kernel read 0.93-1.04x scipy's sgemm in a fresh process and 0.80-0.89x after this warm-up
    (`python docs/blas_warm.py`, three runs). Large calls through numpy's copy of OpenBLAS, or
    allocating 400 MB, did not speed up scipy's (a one-off check): each library is warmed. A
    training process has made large calls long before it runs a small one, so BLAS is timed in
    that state, in every comparison, or a kernel beats a BLAS that no user runs."""
    global _blas_warmed
    if _blas_warmed:
        return
    from scipy.linalg import blas as scipy_blas
    a, b = np.ones((4096, 768), np.float32), np.ones((768, 768), np.float32)
    c = np.zeros((768, 4096), np.float32, order="F")
    with threadpoolctl.threadpool_limits(limits=machine.max_threads(), user_api="blas"):  # every worker
        for _ in range(3):
            a @ b
            scipy_blas.sgemm(1.0, b, a.T, beta=1.0, c=c, overwrite_c=True)
    settle()
    _blas_warmed = True


def compare(contenders, rounds=5, settle_after=(), seed=None, budget_s=None, max_rounds=12, until=None,
            first_rounds_only=()):
    """Interleaved timing of {name: fn}: {name: Timing}. Each round times every contender over a short
    burst of back-to-back calls after a few untimed ones (wake), in a random order per round; a
    pause follows every contender named in `settle_after`. With `budget_s`, as many rounds as fit
    it, at least `rounds` and at most `max_rounds`. With `until` (a test of the {name: Timing} so
    far), rounds are added one at a time, up to `max_rounds`, until it passes; those rounds skip the
    contenders in `first_rounds_only` (slow ones whose comparisons need no precision), which keep
    the first rounds' samples (speedup pairs the rounds both contenders ran)."""
    warm_blas()
    calls, once, round_s = {}, {}, 0.0
    for name, fn in contenders.items():
        once[name] = call_seconds(fn)
        calls[name] = burst_calls(once[name])
        round_s += ((calls[name] + wake_calls(once[name])) * once[name]
                    + (BLAS_SETTLE_S if name in settle_after else 0.0))
        if name in settle_after:
            settle()
    if budget_s is not None:
        rounds = max(rounds, min(max_rounds, int(budget_s / round_s)))
    shuffle = random.Random(seed).shuffle
    samples = {name: [] for name in contenders}

    def one_round(names):
        order = list(names)
        shuffle(order)
        for name in order:
            wake(contenders[name], once[name])
            samples[name].append(seconds(contenders[name], calls[name]))
            if name in settle_after:
                settle()

    for _ in range(rounds):
        one_round(contenders)
    timings = {name: Timing.of(s) for name, s in samples.items()}
    while until is not None and rounds < max_rounds and not until(timings):
        one_round(name for name in contenders if name not in first_rounds_only)
        rounds += 1
        timings = {name: Timing.of(s) for name, s in samples.items()}
    return timings


def blas_info():
    """Which BLAS libraries run here (numpy's and scipy's), their kernels, and whether the
    OpenBLAS kernel was forced by the environment."""
    libraries = [f"{i['internal_api']} {i.get('version')} {i.get('architecture')} ({os.path.basename(i['filepath'])})"
                 for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    numpy_blas = next((i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"), {})
    return {"library": numpy_blas.get("internal_api", "unknown"), "version": numpy_blas.get("version"),
            "architecture": numpy_blas.get("architecture"), "libraries": libraries,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE") or "unset"}


def side_by_side(kernel, problem, kernels, budget_s, baselines=("blas", "numpy"), seed=1):
    """The final comparison of a search: {name: Timing} of the generated `kernels` ({name: (threads,
    function)}), each at its own thread count, and of the kernel's `baselines` on every core (what a
    user's BLAS and the loaders' BLAS fallback run), interleaved on one set of arrays.

    BLAS on every core, whatever the kernels' threads: it once ran at the best finalist's count, and
    a study whose best trial was a 1-thread kernel timed BLAS on one thread beside 2-thread kernels
    (8,128,192,192 forward, Zen 4: BLAS 0.75 ms a call against its usual 0.43, a 2-thread kernel
    stored at "1.93x BLAS" that ran 1.02x it in every other measurement).

    A pause follows every contender, kernels too: numba's threads also spin after a parallel call,
    and a BLAS call started then is slowed. Pausing after BLAS only (as before) read the 4,1024,768,768
    backward kernels at 1.11-1.16x (input) and 1.12-1.23x (weight) BLAS alone on a Zen 4, and at
    1.06-1.07x and 0.96-0.99x with a pause after every contender, as `bench` times them (two runs of
    docs/backward_halves.py)."""
    contenders = calls(kernel, kernel.inputs(problem, seed=seed), kernels, baselines)
    with thread_count(machine.max_threads()):
        return compare(contenders, rounds=FINAL_MIN_ROUNDS, settle_after=tuple(contenders), budget_s=budget_s)


def calls(kernel, arrays, kernels, baselines):
    """{name: call} on `arrays`: the generated `kernels` ({name: (threads, function)}), each at the
    thread count it was rendered for, and the kernel's `baselines` by name."""
    contenders = {name: on_threads(n, lambda fn=fn: kernel.call(fn, arrays)) for name, (n, fn) in kernels.items()}
    contenders.update({name: lambda f=kernel.baseline(name): kernel.call(f, arrays) for name in baselines})
    return contenders


def on_threads(threads, fn):
    """`fn` preceded by setting numba's thread count to `threads` (what its kernel was rendered for)."""
    def call():
        numba.set_num_threads(threads)
        fn()
    return call
