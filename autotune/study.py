"""optuna studies: where they are stored, what they are named, and what each one is about.

One study per kernel, size, machine fingerprint, template version and search space, in an RDB
storage (SQLite by default, PostgreSQL for many workers): rerunning a search resumes it and
workers sharing a storage share its studies. A study carries its problem, the llm.c shape it was
searched as and its anchor config (the kernel every candidate is timed against) as user
attributes, set when it is created.
"""
import hashlib
import random
import time
import warnings

import optuna
import sqlalchemy.exc

from autotune import machine, ops, render, space

STORAGE_ATTEMPTS = 5
HEARTBEAT_S = 20  # a worker that dies without a word has its running trial failed after 3 beats


def default_storage():
    return f"sqlite:///{machine.cache_dir() / 'studies.sqlite3'}"


def open_storage(url=None):
    """optuna's RDB storage at `url` (SQLite by default, PostgreSQL for many workers), with
    heartbeats: a trial whose worker died is failed by the next worker, never left running."""
    url = url or default_storage()
    if url.startswith("sqlite:///"):
        machine.cache_dir().mkdir(parents=True, exist_ok=True)
    if url.startswith("postgresql://"):  # the driver the postgres extra installs, whatever SQLAlchemy's default
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in optuna and stable in use
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


def open_study(problem, storage=None, sampler=None, pruner=None, shape=None):
    """The study of `problem` (created with its attributes if new)."""
    study = optuna.create_study(study_name=study_name(problem), storage=open_storage(storage),
                                sampler=sampler, pruner=pruner, direction="minimize", load_if_exists=True)
    if "problem" not in study.user_attrs:
        study.set_user_attr("problem", [problem.kernel, problem.M, problem.N, problem.K])
        study.set_user_attr("anchor", space.analytical_config(problem).params())
    if shape is not None and "shape" not in study.user_attrs:
        study.set_user_attr("shape", str(shape))
    return study


def problem_of(study):
    """The Problem a study is about (from its attributes), or None for a study this tool did not make."""
    values = study.user_attrs.get("problem")
    if not values or values[0] not in ops.KERNELS:
        return None
    return ops.Problem(values[0], *map(int, values[1:]))


def anchor_of(study):
    """The config every candidate of the study is timed against."""
    return space.Config.from_dict(study.user_attrs["anchor"])


def current_studies(storage):
    """(studies made here with the current templates and search space that have a finished trial,
    names of the others)."""
    shared = open_storage(storage)
    current, skipped = [], []
    for summary in sorted(optuna.get_all_study_summaries(shared, include_best_trial=False),
                          key=lambda s: s.study_name):
        values = summary.user_attrs.get("problem")
        problem = ops.Problem(values[0], *map(int, values[1:])) if values and values[0] in ops.KERNELS else None
        if problem is None or study_name(problem) != summary.study_name:  # another machine, template or space
            skipped.append(summary.study_name)
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=shared)
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            current.append(study)
        else:
            skipped.append(summary.study_name)
    return current, skipped
