"""Search one problem with optuna: each trial renders a candidate, which a sandbox process builds,
verifies and times.

One study per (kernel, M, N, K, machine fingerprint, template hash, search space), in an RDB
storage (SQLite by default, PostgreSQL for many workers), so rerunning a search resumes it and
workers sharing a storage share its studies. A candidate that fails to build, raises, is wrong,
crashes its process or runs past the time limit fails its own trial with the reason in the
trial's user attributes; the study goes on.
"""
import collections
import datetime
import hashlib
import logging
import math
import os
import random
import re
import threading
import time
import warnings

import numpy as np
import optuna
import sqlalchemy.exc
import tqdm

from autotune import build, machine, measure, ops, render, sandbox, space, store

SAMPLERS = {
    "tpe": lambda problem: optuna.samplers.TPESampler(multivariate=True, seed=None),
    "random": lambda problem: optuna.samplers.RandomSampler(),
    "grid": lambda problem: optuna.samplers.GridSampler({k: list(v) for k, v in space.choices(problem).items()}),
}
TRIAL_TIME_LIMIT_S = 120.0  # build + verify + time one candidate; past it the candidate is killed
STORAGE_ATTEMPTS = 5
HEARTBEAT_S = 20  # a worker that dies without a word has its running trial failed after 3 beats
GIVE_UP_FACTOR = 3.0  # a candidate whose warm-up call is this much slower than the best gets one sample
MAX_PROPOSALS_PER_TRIAL = 50  # bounds the proposals (rejected ones, about 20 ms each, included)
FINALISTS = 3  # best configs timed again side by side with BLAS at the end of a search


# Set by the command line's SIGINT/SIGTERM handler. An interrupt that lands inside numba's compiler
# can come back wrapped in an ordinary exception; the flag keeps it an interrupt.
INTERRUPTED = threading.Event()


CandidateFailed = sandbox.CandidateFailed


def default_storage():
    return f"sqlite:///{build.cache_dir() / 'studies.sqlite3'}"


def open_storage(url=None):
    """optuna's RDB storage at `url` (SQLite by default, PostgreSQL for many workers), with
    heartbeats: a trial whose worker died is failed by the next worker, never left running."""
    url = url or default_storage()
    if url.startswith("postgresql://"):  # the driver the postgres extra installs, whatever SQLAlchemy's default
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in optuna 4 and stable in use
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                                                  grace_period=3 * HEARTBEAT_S)
        except sqlalchemy.exc.SQLAlchemyError:
            # Two workers creating a new database race on its tables; the loser finds them made.
            if attempt == STORAGE_ATTEMPTS - 1:
                raise
            time.sleep(0.2 + random.random())


def study_name(problem):
    """One study per kernel, size, machine, template version and search space: timings of other
    templates do not mix, and optuna's categorical parameters keep their choices."""
    template = render.template_hash(ops.KERNELS[problem.kernel])[:8]
    choices = hashlib.sha256(repr(sorted(space.choices(problem).items())).encode()).hexdigest()[:6]
    return (f"{problem.kernel}-M{problem.M}-N{problem.N}-K{problem.K}-{machine.fingerprint()['id']}"
            f"-{template}-{choices}")


def open_study(problem, storage=None, sampler="tpe"):
    build.cache_dir().mkdir(parents=True, exist_ok=True)
    return optuna.create_study(study_name=study_name(problem), storage=open_storage(storage),
                               sampler=SAMPLERS[sampler](problem), direction="minimize", load_if_exists=True)


def warm_start(study, problem, directory, nearest=3):
    """Seed a new study with what won before on this machine: the winner and finalists of this
    size's own record (a new study of a tuned size means the templates or the search space changed
    since), then those of the `nearest` other tuned sizes of the same kernel (by log-distance of
    M, N, K), each moved to the nearest valid choice; then the analytical model's config and the
    loader's default. Records from other machines say nothing about this one."""
    def distance(entry):
        p = entry.problem
        return sum(abs(math.log(a / b)) for a, b in ((p.M, problem.M), (p.N, problem.N), (p.K, problem.K)))

    earlier = sorted((e for e in store.entries(directory) if e.status in ("ok", "stale")
                      and e.problem.kernel == problem.kernel), key=distance)
    same = [e for e in earlier if e.problem == problem]
    others = [e for e in earlier if e.problem != problem][:nearest]
    seeds = [*(config for e in same + others for config in _seed_configs(e.record)),
             space.analytical_config(problem), space.default_config()]
    for config in dict.fromkeys(space.nearest_choice(c, problem) for c in seeds):
        if space.invalid_reason(config, problem) is None:
            study.enqueue_trial(config.params(), user_attrs={"seeded": True})


def _seed_configs(record):
    """A record's winner, then its other finalists (records before finalists were stored: the winner)."""
    finalists = record.get("finalists")
    configs = [f["config"] for f in finalists] if isinstance(finalists, list) else []
    return [space.Config.from_dict(params) for params in [record["config"], *configs]]


def suggest(trial, problem):
    """The trial's Config, or TrialPruned if it is invalid for this problem (before any compile)."""
    config = space.Config.from_dict(
        {name: trial.suggest_categorical(name, options) for name, options in space.choices(problem).items()})
    reason = space.invalid_reason(config, problem)
    if reason:
        trial.set_user_attr("rejected", reason)
        raise optuna.TrialPruned(reason)
    return config


class Objective:
    """Seconds per call of the candidate a trial proposes (the study minimizes it)."""

    def __init__(self, kernel, problem, evaluator):
        self.kernel, self.problem, self.evaluator = kernel, problem, evaluator  # a sandbox.Sandbox

    def __call__(self, trial):
        trial.set_user_attr("pid", os.getpid())  # whose trial it is, if an interrupt strands it
        if INTERRUPTED.is_set():
            raise KeyboardInterrupt
        config = suggest(trial, self.problem)
        earlier = _same_params(trial)
        if earlier is not None and earlier.state == optuna.trial.TrialState.RUNNING:
            trial.set_user_attr("rejected", f"trial {earlier.number} is evaluating this config")
            raise optuna.TrialPruned()  # another worker is timing it: do not time it twice
        if earlier is not None:  # categorical spaces repeat themselves: never build or time twice
            trial.set_user_attr("repeat_of", earlier.number)
            if earlier.state == optuna.trial.TrialState.FAIL:
                raise CandidateFailed(earlier.user_attrs.get("failure", "failed before"))
            return earlier.value
        try:
            return self._evaluate(trial, config)
        except Exception as error:
            if INTERRUPTED.is_set():
                raise KeyboardInterrupt from error
            trial.set_user_attr("failure", sandbox.describe(error))
            raise

    def _evaluate(self, trial, config):
        cutoff = GIVE_UP_FACTOR * _best_value(trial.study)
        result = self.evaluator.evaluate(render.render(self.kernel, config), config, cutoff)
        trial.set_user_attr("compile_s", result["compile_s"])
        trial.set_user_attr("compiled", result["compiled"])
        if result["repeats"] == 1:
            trial.set_user_attr("stopped_early", f"over {GIVE_UP_FACTOR}x the best so far: timed once")
        trial.set_user_attr("gflops", round(self.problem.flops / result["median_s"] / 1e9, 2))
        trial.set_user_attr("spread_s", result["spread_s"])
        return result["median_s"]


def _progress(bar, problem, counted):
    def update(study, trial):
        if trial.state in counted:
            bar.update(1)
            best = _best_value(study)
            failed = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))
            bar.set_postfix_str((f"best {problem.flops / best / 1e9:.1f} GF/s, " if best < float("inf") else "")
                                + f"{failed} failed")
    return update


def _best_value(study):
    try:
        return study.best_value
    except ValueError:  # no complete trial yet
        return float("inf")


def _same_params(trial):
    """An earlier trial of the same config: a finished one (its result is reused) or one another
    worker is running now. Trials an interrupt stranded do not count."""
    finished = [t for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                                         optuna.trial.TrialState.FAIL))
                if not (t.state == optuna.trial.TrialState.FAIL and "failure" not in t.user_attrs)]
    running = [t for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
               if t.number < trial.number]
    return next((t for t in finished + running if t.params == trial.params), None)


def search(kernel, shape, trials=30, timeout=None, sampler="tpe", storage=None, directory=None,
           progress=True, time_limit_s=TRIAL_TIME_LIMIT_S):
    """Tune `kernel` for `shape` until its study holds `trials` trials; store and return the winner."""
    optuna.logging.set_verbosity(logging.ERROR)  # failed trials: reasons in the study and the final table
    problem = kernel.problem(shape)
    study = open_study(problem, storage, sampler)
    if not study.trials:
        study.set_user_attr("shape", str(shape))
        warm_start(study, problem, store.tuned_dir(directory))
    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    remaining = trials - len(study.get_trials(deepcopy=False, states=counted))
    if remaining > 0:  # rejected configs cost no compile and do not count; stop at `trials` evaluated ones
        earlier = {t.number for t in study.trials}
        try:
            with (sandbox.Sandbox(kernel, problem, time_limit_s) as evaluator,
                  tqdm.tqdm(total=remaining, desc=kernel.name, unit="trial", disable=not progress) as bar):
                study.optimize(Objective(kernel, problem, evaluator), n_trials=MAX_PROPOSALS_PER_TRIAL * remaining,
                               timeout=timeout, catch=(Exception,), gc_after_trial=False,
                               callbacks=[optuna.study.MaxTrialsCallback(trials, states=counted),
                                          _progress(bar, problem, counted)])
        except KeyboardInterrupt:
            _fail_interrupted(study, earlier)
            raise
    record, source = final_record(study, kernel, problem, str(shape))
    record["stored"] = store.save(record, source, store.tuned_dir(directory))
    return record


def pull(storage, directory=None):
    """Store the winners of every study in `storage` made on this machine kind with the current
    templates (after timing their finalists here, beside BLAS); returns (records, skipped names)."""
    optuna.logging.set_verbosity(logging.WARNING)
    records, skipped = [], []
    shared = open_storage(storage)
    for name in sorted(optuna.get_all_study_names(shared)):
        problem = problem_of_study(name)
        if problem is None or study_name(problem) != name:  # another machine, template or search space
            skipped.append(name)
            continue
        study = optuna.load_study(study_name=name, storage=shared)
        if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            skipped.append(name)
            continue
        kernel = ops.KERNELS[problem.kernel]
        record, source = final_record(study, kernel, problem, study.user_attrs.get("shape", "?"))
        record["stored"] = store.save(record, source, store.tuned_dir(directory))
        records.append(record)
    return records, skipped


def problem_of_study(name):
    """The Problem a study name (see study_name) is about, or None for a name not of that form."""
    match = re.fullmatch(r"(\w+)-M(\d+)-N(\d+)-K(\d+)-\w+-\w+-\w+", name)
    if match is None or match[1] not in ops.KERNELS:
        return None
    return ops.Problem(match[1], int(match[2]), int(match[3]), int(match[4]))


def _fail_interrupted(study, earlier):
    """An interrupt between optuna creating a trial and running it leaves the trial RUNNING: end
    ours as failed (trials another worker started carry its pid and are left alone)."""
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.number not in earlier and t.user_attrs.get("pid", os.getpid()) == os.getpid():
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def finalists(study, count=FINALISTS):
    """The best distinct configs of the study at the best trial's thread count, best first."""
    best_threads = study.best_trial.params["threads"]
    configs = []
    for t in sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value):
        config = space.Config.from_dict(t.params)
        if config.threads == best_threads and config not in configs:
            configs.append(config)
    return configs[:count]


def final_record(study, kernel, problem, shape):
    """Time the best configs again beside BLAS, interleaved, keep the fastest, and describe it.

    Re-timing a few finalists side by side guards against the winner's curse: on a noisy machine
    the best of many single measurements is often a lucky one."""
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        reasons = {t.user_attrs.get("failure") or t.user_attrs.get("rejected") for t in study.trials}
        raise RuntimeError(f"no candidate for {problem} passed verification: {sorted(filter(None, reasons))[:3]}")
    configs = finalists(study)
    arrays = kernel.inputs(problem, seed=1)
    fns = [getattr(build.build(render.render(kernel, c), render.COMPILE_FLAGS).module, kernel.entry) for c in configs]
    scratch = np.empty(arrays[kernel.outputs[0]].shape, np.float32)
    contenders = {c.label(): (lambda fn=fn: kernel.call(fn, arrays)) for c, fn in zip(configs, fns)}
    with measure.thread_count(configs[0].threads):
        timings = measure.compare({**contenders, "numpy": lambda: kernel.call(kernel.blas, arrays),
                                   "sgemm": lambda: kernel.sgemm(arrays, scratch)},
                                  rounds=5, blas_names=("numpy", "sgemm"))
        naive = measure.time_call(lambda: kernel.naive(arrays), budget_s=2.0, min_repeats=1, max_repeats=5)
    config = min(configs, key=lambda c: timings[c.label()].median)
    source = render.render(kernel, config)
    tuned, flops = timings[config.label()], problem.flops
    use = "blas" if timings["numpy"].median < tuned.median else "kernel"  # never slower than BLAS
    states = [t.state for t in study.trials]
    record = {
        "kernel": kernel.name, "M": problem.M, "N": problem.N, "K": problem.K, "shape": str(shape),
        "config": config.params(), "config_label": config.label(),
        "finalists": [{"config": c.params(), "label": c.label(), "median_s": timings[c.label()].median}
                      for c in configs],
        "use": use, "median_s": tuned.median, "spread_s": [tuned.low, tuned.high], "repeats": tuned.repeats,
        "gflops": tuned.gflops(flops),
        "baselines": {
            "numpy_s": timings["numpy"].median, "numpy_gflops": timings["numpy"].gflops(flops),
            "numpy_ratio": timings["numpy"].median / tuned.median,
            "sgemm_s": timings["sgemm"].median, "sgemm_gflops": timings["sgemm"].gflops(flops),
            "sgemm_ratio": timings["sgemm"].median / tuned.median,
            "naive_s": naive.median, "naive_gflops": naive.gflops(flops),
            "threads": config.threads, "blas": measure.blas_info(),
        },
        "trials": {"complete": states.count(optuna.trial.TrialState.COMPLETE), "failed": states.count(optuna.trial.TrialState.FAIL),
                   "rejected": states.count(optuna.trial.TrialState.PRUNED), "study": study.study_name,
                   "failures": collections.Counter(t.user_attrs["failure"][:160] for t in study.trials
                                                   if "failure" in t.user_attrs).most_common(5)},
        "compile_s": round(sum(t.user_attrs.get("compile_s", 0) for t in study.trials), 2),
        "search_s": round(sum(t.duration.total_seconds() for t in study.trials if t.duration), 1),
        "compile_flags": render.COMPILE_FLAGS, "template": kernel.template,
        "template_hash": render.template_hash(kernel), "source_sha256": store.source_digest(source),
        "fingerprint": machine.fingerprint(), "versions": _versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return record, source


def _versions():
    import numba, numpy
    return {"numba": numba.__version__, "numpy": numpy.__version__, "optuna": optuna.__version__}
