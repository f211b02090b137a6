"""Interrupted searches resume; concurrent writers to one tuned/ keep one whole record; dead workers'
trials are failed. Every wait here is on a state (a trial's, a file's), with a deadline that fails."""
import multiprocessing
import signal
import subprocess
import sys
import time

import optuna
import pytest

from autotune import search, store, study as studies
from autotune.ops import KERNELS, Shape
from conftest import make_record

SHAPE = Shape(B=2, T=19, C=40, OC=24)
PROBLEM = KERNELS["forward"].problem(SHAPE)


def wait_for(condition, what, deadline_s=600):
    """Poll `condition` until it holds; fail the test if it does not within the deadline."""
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.5)


def _save_many(directory, speedups):
    for speedup in speedups:
        record, source = make_record(vs_blas=speedup)
        store.save(record, source, directory)


def test_concurrent_writers_leave_one_whole_record_the_fastest(tmp_path):
    speedups = [[1 + (i * 7 % 13) / 10 for i in range(30)], [1.05 + (i * 5 % 11) / 10 for i in range(30)]]
    workers = [multiprocessing.get_context("fork").Process(target=_save_many, args=(tmp_path, s)) for s in speedups]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
        assert w.exitcode == 0
    [entry] = store.entries(tmp_path)
    assert entry.status == "ok" and entry.record.vs_blas[0] == max(max(s) for s in speedups)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def _counted(study):
    return [t for t in study.trials if t.state in search.COUNTED]


def _study_has_a_complete_trial(storage):
    try:
        return any(t.state == optuna.trial.TrialState.COMPLETE for t in studies.open_study(PROBLEM, storage).trials)
    except KeyError:  # the study is not created yet
        return False


def test_sigint_mid_search_leaves_a_study_that_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    command = [sys.executable, "-m", "autotune", "search", "--shape", "2,19,40,24", "--trials", "40",
               "--storage", storage, "--tuned-dir", str(tmp_path / "tuned")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: _study_has_a_complete_trial(storage) or process.poll() is not None, "a finished trial")
    assert process.poll() is None, "the search ended before it was interrupted"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "run the same command again to resume" in stderr
    assert not list((tmp_path / "tuned").glob("*.json"))

    study = studies.open_study(PROBLEM, storage)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    earlier = len(_counted(study))
    assert earlier >= 1
    command[command.index("--trials") + 1] = str(earlier + 1)
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    assert len(_counted(studies.open_study(PROBLEM, storage))) == earlier + 1  # resumed, not restarted
    assert len(list((tmp_path / "tuned").glob("*.json"))) == 1


def test_two_searches_at_once_share_the_study_and_leave_one_whole_record(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    command = [sys.executable, "-m", "autotune", "search", "--shape", "2,19,40,24", "--trials", "6",
               "--storage", storage, "--tuned-dir", str(tmp_path / "tuned")]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=900) for p in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-2000:]

    study = studies.open_study(PROBLEM, storage)
    assert len(_counted(study)) >= 6 and not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    timed = [t for t in _counted(study) if "repeat_of" not in t.user_attrs]
    assert len({tuple(sorted(t.params.items())) for t in timed}) == len(timed)  # no config timed twice

    [entry] = store.entries(tmp_path / "tuned")  # one intact record, made from this study's finalists
    assert entry.status == "ok" and entry.record.trials["study"] == study.study_name
    assert entry.record.config in {c for c, _ in entry.record.finalists}


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the test plays the dead worker with study.ask()
def test_a_dead_workers_running_trial_is_failed_by_the_next_search(tmp_path, monkeypatch, steady_anchor):
    monkeypatch.setattr(studies, "HEARTBEAT_S", 1)  # grace period 3 s instead of 60 s
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    study = studies.open_study(PROBLEM, storage)
    orphan = study.ask()  # a worker took this trial, then was killed: it never reports
    study._storage.record_heartbeat(orphan._trial_id)
    wait_for(lambda: orphan._trial_id in study._storage._get_stale_trial_ids(study._study_id), "a stale heartbeat", 60)
    search.search(KERNELS["forward"], SHAPE, trials=2, storage=storage, directory=tmp_path / "tuned", progress=False)
    trial = studies.open_study(PROBLEM, storage).trials[orphan.number]
    assert trial.state == optuna.trial.TrialState.FAIL  # counted: the search ran one more trial
