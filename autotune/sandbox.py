"""Build, verify and time candidates in a child process: a crash or a hang fails one trial.

Generated kernels run without bounds checks, so a bad candidate can segfault; one can also loop
for ever. The search renders the source and hands it to a child process that keeps the
problem's references, its timing arrays and the study's anchor kernel for the whole search. The
parent waits at most the trial's time limit; a child that dies or overruns is killed and replaced.

A candidate is timed in rounds interleaved with the anchor (a fixed config of the study), and
its score is the median per-round ratio of its time to the anchor's: a slow drift of the machine
slows both alike and cancels. After each round the parent says whether to go on (racing: a
candidate far behind after two rounds is not timed further). Each result also says how much
slower than usual the anchor ran (anchor_slowdown): a load that takes one of the cores slows a
parallel anchor far more than a 1-thread candidate, and the ratio then lies (search.Objective).
"""
import math
import multiprocessing
import os
import random
import signal
import statistics
import threading

import numpy as np

from autotune import build, measure, ops, render, space, verify

# A forked child inherits the parent's numba/OpenMP threads in an unknown state: start fresh.
CONTEXT = multiprocessing.get_context("spawn")
STARTUP_LIMIT_S = 600.0  # building the float64 references of a large problem takes a while
STARTUP_BURSTS = 3  # of the anchor, timed once the child is ready: its usual seconds per call
WAITING = threading.Event()  # set while the parent waits on the child: a signal may interrupt it there


class CandidateFailed(Exception):
    """A candidate that did not build, crashed, hung or gave a wrong answer."""


class Sandbox:
    """A child process that evaluates candidates of one kernel at one problem size against an anchor."""

    def __init__(self, kernel, problem, anchor, time_limit_s):
        self.kernel, self.problem, self.anchor, self.time_limit_s = kernel, problem, anchor, time_limit_s
        self._process = self._connection = None
        self.usual_anchor_s = math.inf  # the anchor's fastest median seconds per call: at start-up, then per trial

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def evaluate(self, source, config, keep_going):
        """Time `source` (rendered from `config`) against the anchor: a dict with `ratios` (candidate /
        anchor seconds per round), `seconds` (the candidate's, per round), `compile_s` and `compiled`;
        and `anchor_slowdown` (the anchor's median seconds over its usual: near 1 unless something
        else ran); or CandidateFailed. After each round keep_going(ratios so far) says whether to
        time another."""
        if self._process is None:
            self._start()
        self._connection.send((source, config.params()))
        ratios = []
        while True:
            status, payload = self._receive(self.time_limit_s, "the trial time limit")
            if status == "failed":
                raise CandidateFailed(payload)
            if status == "done":
                anchor_s = statistics.median(payload["anchor_seconds"])
                payload["anchor_slowdown"] = anchor_s / self.usual_anchor_s
                payload["anchor_s"] = anchor_s
                self.usual_anchor_s = min(self.usual_anchor_s, anchor_s)
                return payload
            ratios.append(payload)
            self._connection.send(keep_going(ratios))

    def take_pace(self, result):
        """The anchor's time in `result` (from evaluate) is its usual time from now on: a load that
        stayed through every timing of a trial is the machine's pace (search.Objective)."""
        self.usual_anchor_s = result["anchor_s"]

    def close(self):
        if self._process is not None:
            try:  # its whole process group: a compile it started (autotune.build) must not outlive it
                os.killpg(self._process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._process.kill()  # in case it died before it made its own group
            self._process.join()
            self._connection.close()
        self._process = self._connection = None

    def _start(self):
        parent_end, child_end = CONTEXT.Pipe()
        self._process = CONTEXT.Process(target=_serve, args=(child_end, self.kernel.name, self.problem,
                                                             self.anchor.params()),
                                        daemon=True, name=f"autotune-{self.kernel.name}")
        self._process.start()
        child_end.close()
        self._connection = parent_end
        _, anchor_s = self._receive(STARTUP_LIMIT_S, "start-up")
        self.usual_anchor_s = min(self.usual_anchor_s, anchor_s)

    def _receive(self, limit_s, what):
        WAITING.set()
        try:
            ready = self._connection.poll(limit_s)  # also returns when the child has died
        finally:
            WAITING.clear()
        if not ready:
            self.close()
            raise CandidateFailed(f"killed: no result within {what} ({limit_s:.0f} s)")
        try:
            return self._connection.recv()
        except EOFError:
            self._process.join(timeout=5)
            code = self._process.exitcode
            self.close()
            raise CandidateFailed(f"the evaluating process died ({_describe_exit(code)})") from None


def describe(error):
    """The reason a trial failed, as stored with it."""
    text = str(error) if isinstance(error, CandidateFailed) else f"{type(error).__name__}: {error}"
    return text[:500]


def _describe_exit(code):
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _serve(connection, kernel_name, problem, anchor_params):
    """The child: answer one (source, config params) at a time until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends this process
    os.setpgrp()  # a group of its own, killed whole (close): a hung compile would go on using a core
    kernel = ops.KERNELS[kernel_name]
    verifier = verify.Verifier(kernel, problem)
    measure.settle()  # the references were BLAS calls
    arrays = kernel.inputs(problem, seed=1)  # timed in place; results are not checked
    anchor_config = space.Config.from_dict(anchor_params)
    anchor_fn = build.build_kernel(kernel, anchor_config).function(kernel)
    anchor = measure.on_threads(anchor_config.threads, lambda: kernel.call(anchor_fn, arrays))
    once = measure.call_seconds(anchor)
    calls = measure.burst_calls(once)
    usual = statistics.median(measure.seconds(anchor, calls) for _ in range(STARTUP_BURSTS))
    connection.send(("ready", usual))
    while True:
        try:
            source, params = connection.recv()
        except EOFError:
            return
        try:
            _evaluate(connection, kernel, source, space.Config.from_dict(params), verifier, arrays, anchor, calls)
        except Exception as error:
            connection.send(("failed", describe(error)))


def _evaluate(connection, kernel, source, config, verifier, arrays, anchor, calls):
    """Build, verify, then time rounds of (anchor, candidate) in random order while the parent says go."""
    built = build.build(source, render.COMPILE_FLAGS)
    fn = built.function(kernel)
    with measure.thread_count(config.threads):
        wrong = verifier.check(fn, config)
    if wrong:
        raise CandidateFailed(f"wrong result: {wrong}")
    measure.settle()  # the references of the edge size were BLAS calls
    run = {"candidate": measure.on_threads(config.threads, lambda: kernel.call(fn, arrays)), "anchor": anchor}
    for call in run.values():  # woken after the pause: the rounds follow back to back (measure.wake)
        measure.call_seconds(call)
    seconds = {"candidate": [], "anchor": []}
    order = list(run)
    while True:
        random.shuffle(order)
        for name in order:
            seconds[name].append(measure.seconds(run[name], calls))
        connection.send(("round", seconds["candidate"][-1] / seconds["anchor"][-1]))
        if not connection.recv():
            break
    ratios = list(np.array(seconds["candidate"]) / np.array(seconds["anchor"]))
    connection.send(("done", {"ratios": ratios, "seconds": seconds["candidate"], "anchor_seconds": seconds["anchor"],
                              "compile_s": round(built.seconds, 3), "compiled": built.compiled}))

