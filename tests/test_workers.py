"""Many workers on one optuna storage, and `pull`: two worker processes against a real PostgreSQL
server share one study, never time a config twice, and `pull` stores the study's winner."""
import os
import subprocess
import sys

import optuna
import pytest

from autotune import search, store, study as studies
from autotune.ops import KERNELS, Shape

SHAPE = Shape(B=2, T=19, C=40, OC=24)
PROBLEM = KERNELS["forward"].problem(SHAPE)
POSTGRES = os.environ.get("AUTOTUNE_TEST_POSTGRES")  # .ci/run starts a server and sets it


def autotune(*args, cache_dir):
    env = {**os.environ, "AUTOTUNE_CACHE_DIR": str(cache_dir)}  # each worker its own build cache, as on two machines
    return subprocess.Popen([sys.executable, "-m", "autotune", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process, timeout=600):
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def study_names(storage):
    return [n for n in optuna.get_all_study_names(studies.open_storage(storage)) if n == studies.study_name(PROBLEM)]


def check_pulled(storage, directory):
    study = studies.open_study(PROBLEM, storage)
    [entry] = store.entries(directory)
    assert entry.status == "ok" and entry.record.trials["study"] == study.study_name
    assert entry.record.config in search.finalists(study)


@pytest.mark.skipif(not POSTGRES, reason="needs AUTOTUNE_TEST_POSTGRES=postgresql://... (.ci/run starts a server)")
def test_two_workers_share_one_postgres_study_and_pull_stores_the_winner(tmp_path):
    for name in study_names(POSTGRES):  # the database outlives a test run
        optuna.delete_study(study_name=name, storage=studies.open_storage(POSTGRES))
    trials = 10
    workers = [autotune("search", "--shape", "2,19,40,24", "--trials", str(trials), "--storage", POSTGRES,
                        "--tuned-dir", str(tmp_path / f"worker{i}"), cache_dir=tmp_path / f"cache{i}")
               for i in range(2)]
    for worker in workers:
        finish(worker)

    assert len(study_names(POSTGRES)) == 1
    study = studies.open_study(PROBLEM, POSTGRES)
    counted = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)]
    assert len(counted) >= trials and not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert {t.user_attrs["pid"] for t in counted} == {w.pid for w in workers}  # both workers did trials
    timed = [t for t in counted if "repeat_of" not in t.user_attrs]
    assert len({tuple(sorted(t.params.items())) for t in timed}) == len(timed)  # no config timed twice

    finish(autotune("pull", "--storage", POSTGRES, "--tuned-dir", str(tmp_path / "pulled"), cache_dir=tmp_path / "c"))
    check_pulled(POSTGRES, tmp_path / "pulled")


def test_pull_from_an_sqlite_storage_stores_the_winner_and_skips_other_machines(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    search.search(KERNELS["forward"], SHAPE, trials=2, storage=storage, directory=tmp_path / "searched",
                  progress=False)
    name = studies.study_name(PROBLEM)
    other = name.replace(name.split("-")[4], "0123456789")
    elsewhere = optuna.create_study(study_name=other, storage=studies.open_storage(storage))  # another machine's
    elsewhere.set_user_attr("problem", ["forward", PROBLEM.M, PROBLEM.N, PROBLEM.K])

    outcomes, skipped = search.pull(storage, tmp_path / "pulled")
    assert [o.record.trials["study"] for o in outcomes] == [name] and skipped == [other]
    check_pulled(storage, tmp_path / "pulled")
