"""Interrupted searches resume; concurrent writers to one tuned/ keep the fastest whole record."""
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest

from autotune import search, store
from autotune.ops import KERNELS, Shape
from conftest import make_record

SHAPE = Shape(B=2, T=19, C=40, OC=24)


def _save_many(directory, medians):
    for median in medians:
        store.save(*make_record(median_s=median), directory)


def test_concurrent_writers_keep_the_fastest_record(tmp_path):
    medians = [[0.5 + (i * 7 % 13) / 10 for i in range(30)], [0.45 + (i * 5 % 11) / 10 for i in range(30)]]
    workers = [multiprocessing.get_context("fork").Process(target=_save_many, args=(tmp_path, m)) for m in medians]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
        assert w.exitcode == 0
    [entry] = store.entries(tmp_path)
    assert entry.status == "ok" and entry.record["median_s"] == min(min(m) for m in medians)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def _counted(study):
    return [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)]


def test_sigint_mid_search_leaves_a_study_that_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    command = [sys.executable, "-m", "autotune", "search", "--shape", "2,19,40,24", "--trials", "40",
               "--storage", storage, "--tuned-dir", str(tmp_path / "tuned")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    problem = KERNELS["forward"].problem(SHAPE)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        time.sleep(1)
        try:
            if any(t.state == optuna.trial.TrialState.COMPLETE for t in search.open_study(problem, storage).trials):
                break
        except KeyError:  # the study is not created yet
            pass
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-2000:]
    assert "run the same command again to resume" in stderr
    assert not (tmp_path / "tuned").exists() or not list((tmp_path / "tuned").glob("*.json"))

    study = search.open_study(problem, storage)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    earlier = len(_counted(study))
    assert earlier >= 1
    command[command.index("--trials") + 1] = str(earlier + 1)
    subprocess.run(command, check=True, capture_output=True, timeout=300, env=os.environ)
    assert len(_counted(search.open_study(problem, storage))) == earlier + 1  # resumed, not restarted
    assert len(list((tmp_path / "tuned").glob("*.json"))) == 1


def test_two_searches_at_once_share_the_study_and_keep_the_better_winner(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    command = [sys.executable, "-m", "autotune", "search", "--shape", "2,19,40,24", "--trials", "6",
               "--storage", storage, "--tuned-dir", str(tmp_path / "tuned")]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-2000:]

    study = search.open_study(KERNELS["forward"].problem(SHAPE), storage)
    assert len(_counted(study)) >= 6 and not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    timed = [t for t in _counted(study) if "repeat_of" not in t.user_attrs]
    assert len({tuple(sorted(t.params.items())) for t in timed}) == len(timed)  # no config timed twice

    [entry] = store.entries(tmp_path / "tuned")
    assert entry.status == "ok"
    reported = [float(_row(stdout)[4]) for stdout, _ in outputs]  # each process's final GF/s
    assert round(entry.record["gflops"], 1) == max(reported)
    assert sorted(_row(stdout)[-1] for stdout, _ in outputs) in (["kept faster", "yes"], ["yes", "yes"])


def _row(stdout):
    """The forward row of the search's table, split into its columns (two or more spaces apart)."""
    line = next(line for line in stdout.splitlines() if line.startswith("forward "))
    return re.split(r"\s{2,}", line)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the test plays the dead worker with study.ask()
def test_a_dead_workers_running_trial_is_failed_by_the_next_search(tmp_path, monkeypatch):
    monkeypatch.setattr(search, "HEARTBEAT_S", 1)  # grace period 3 s instead of 60 s
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    study = search.open_study(KERNELS["forward"].problem(SHAPE), storage)
    orphan = study.ask()  # a worker took this trial, then was killed: it never reports
    study._storage.record_heartbeat(orphan._trial_id)
    time.sleep(4)
    search.search(KERNELS["forward"], SHAPE, trials=2, storage=storage, directory=tmp_path / "tuned", progress=False)
    trial = search.open_study(KERNELS["forward"].problem(SHAPE), storage).trials[orphan.number]
    assert trial.state == optuna.trial.TrialState.FAIL  # counted: the search ran one more trial
