"""Build, verify and time candidates in a child process: a crash or a hang fails one trial.

Generated kernels run without bounds checks, so a bad candidate can segfault; one can also loop
for ever. The search renders the source and hands it to a child process that keeps the
problem's reference and timing arrays for the whole search. The parent waits at most the trial's
time limit; a child that dies or overruns is killed and replaced for the next trial.
"""
import multiprocessing
import signal

from autotune import build, measure, ops, render, space, verify

# A forked child inherits the parent's numba/OpenMP threads in an unknown state: start fresh.
CONTEXT = multiprocessing.get_context("spawn")
STARTUP_LIMIT_S = 600.0  # building the float64 reference of a large problem takes a while
TIMING_BUDGET_S = 1.0  # per trial, after one warm-up call


class CandidateFailed(Exception):
    """A candidate that did not build, crashed, hung or gave a wrong answer."""


class Sandbox:
    """A child process that evaluates candidates of one kernel at one problem size."""

    def __init__(self, kernel, problem, time_limit_s):
        self.kernel, self.problem, self.time_limit_s = kernel, problem, time_limit_s
        self._process = self._connection = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def evaluate(self, source, config, cutoff_s):
        """Timing of `source` (a dict: median_s, spread_s, repeats, compile_s, compiled), or CandidateFailed."""
        if self._process is None:
            self._start()
        self._connection.send((source, config.params(), cutoff_s))
        status, payload = self._receive(self.time_limit_s, "the trial time limit")
        if status == "failed":
            raise CandidateFailed(payload)
        return payload

    def close(self):
        if self._process is not None:
            self._process.kill()
            self._process.join()
            self._connection.close()
        self._process = self._connection = None

    def _start(self):
        parent_end, child_end = CONTEXT.Pipe()
        self._process = CONTEXT.Process(target=_serve, args=(child_end, self.kernel.name, self.problem),
                                        daemon=True, name=f"autotune-{self.kernel.name}")
        self._process.start()
        child_end.close()
        self._connection = parent_end
        self._receive(STARTUP_LIMIT_S, "start-up")

    def _receive(self, limit_s, what):
        if not self._connection.poll(limit_s):  # also returns when the child has died
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


def _serve(connection, kernel_name, problem):
    """The child: answer (source, params, cutoff) requests until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends this process
    kernel = ops.KERNELS[kernel_name]
    reference = verify.Reference(kernel, problem, seed=0)
    arrays = kernel.inputs(problem, seed=1)  # timed in place; results are not checked
    connection.send(("ready", None))
    while True:
        try:
            source, params, cutoff_s = connection.recv()
        except EOFError:
            return
        try:
            answer = ("ok", evaluate(kernel, source, space.Config.from_dict(params), reference, arrays, cutoff_s))
        except Exception as error:
            answer = ("failed", describe(error))
        connection.send(answer)


def evaluate(kernel, source, config, reference, arrays, cutoff_s):
    """Build `source`, check it against `reference`, time it on `arrays` (early stop past `cutoff_s`)."""
    built = build.build(source, render.COMPILE_FLAGS)
    fn = getattr(built.module, kernel.entry)
    with measure.thread_count(config.threads):
        wrong = verify.check(kernel, fn, config, reference)
        if wrong:
            raise CandidateFailed(f"wrong result: {wrong}")
        timing = measure.time_call(lambda: kernel.call(fn, arrays), TIMING_BUDGET_S, cutoff_s=cutoff_s)
    return {"median_s": timing.median, "spread_s": [timing.low, timing.high], "repeats": timing.repeats,
            "compile_s": round(built.seconds, 3), "compiled": built.compiled}

