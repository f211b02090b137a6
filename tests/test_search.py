"""A real search on a tiny shape: broken, crashing and hanging candidates fail their trials, the winner is stored,
the study resumes, and a fresh process loads the winner by import without compiling."""
import json
import os
import subprocess
import sys

import optuna
import pytest

from autotune import render, search, space, store
from autotune.ops import KERNELS, Problem, Shape
from conftest import make_record

SHAPE = Shape(B=2, T=19, C=40, OC=24)  # forward: M=38, N=24, K=40
GOOD = space.Config(mr=4, nr=16, kc=64, row_tiles=2, col_panels=1, order="panels-outer", threads=1)
WRONG = space.Config(mr=6, nr=16, kc=64, row_tiles=1, col_panels=1, order="rows-outer", threads=1)
BROKEN = space.Config(mr=8, nr=16, kc=64, row_tiles=1, col_panels=2, order="panels-outer", threads=1)
CRASHING = space.Config(mr=4, nr=32, kc=64, row_tiles=1, col_panels=1, order="rows-outer", threads=1)
HANGING = space.Config(mr=6, nr=32, kc=64, row_tiles=1, col_panels=1, order="rows-outer", threads=1)


def params(config):
    return config.params()


@pytest.fixture
def sabotaged_render(monkeypatch):
    """WRONG renders a kernel that subtracts, BROKEN source that does not compile, CRASHING a
    module that segfaults its process, HANGING one that never finishes loading."""
    real = render.render

    def render_with_faults(kernel, config):
        source = real(kernel, config)
        if config == WRONG:
            return source.replace("+= a0 *", "-= a0 *")
        if config == BROKEN:
            return source.replace("def matmul_forward(", "def matmul_forward((")
        if config == CRASHING:
            return source + "\nimport ctypes\nctypes.string_at(0)  # reads address 0: SIGSEGV\n"
        if config == HANGING:
            return source + "\nimport time\ntime.sleep(3600)\n"
        return source
    monkeypatch.setattr(render, "render", render_with_faults)


def test_search_survives_bad_candidates_stores_winner_and_resumes(tmp_path, sabotaged_render):
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    kernel = KERNELS["forward"]
    study = search.open_study(kernel.problem(SHAPE), storage)
    for config in (WRONG, BROKEN, CRASHING, HANGING, GOOD):
        study.enqueue_trial(params(config))
    record = search.search(kernel, SHAPE, trials=5, storage=storage, directory=tmp_path / "tuned", progress=False,
                           time_limit_s=20)

    study = search.open_study(kernel.problem(SHAPE), storage)
    failures = [t.user_attrs["failure"] for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert any(f.startswith("wrong result: out[") for f in failures), failures
    assert any("SyntaxError" in f for f in failures), failures
    assert any("the evaluating process died (killed by SIGSEGV)" in f for f in failures), failures
    assert any("killed: no result within the trial time limit (20 s)" in f for f in failures), failures
    assert record["config"] == params(GOOD) and record["stored"]
    assert record["trials"]["failed"] == 4 and record["trials"]["complete"] == 1
    assert record["baselines"]["numpy_gflops"] > 0 and record["baselines"]["naive_gflops"] > 0

    search.search(kernel, SHAPE, trials=7, storage=storage, directory=tmp_path / "tuned", progress=False)
    counted = [t for t in search.open_study(kernel.problem(SHAPE), storage).trials
               if t.state != optuna.trial.TrialState.PRUNED]
    assert len(counted) == 7  # resumed: 5 earlier trials + 2 new ones

    [entry] = store.entries(tmp_path / "tuned")
    assert entry.status == "ok"


LOAD_IN_NEW_PROCESS = """
import json
import numpy as np, tuned
from autotune import build, load
from autotune.ops import Problem
rng = np.random.default_rng(0)
inp = rng.standard_normal((2, 19, 40), dtype=np.float32)
weight = rng.standard_normal((24, 40), dtype=np.float32)
bias = rng.standard_normal(24, dtype=np.float32)
out = np.empty((2, 19, 24), np.float32)
tuned.matmul_forward(out, inp, weight, bias)
entry = load.winners().by_problem[Problem("forward", 38, 24, 40)]
built = build.build(entry.source, entry.record["compile_flags"])  # what the loader built (or BLAS won)
error = np.abs(out - (inp.astype(np.float64) @ weight.T.astype(np.float64) + bias)).max()
print(json.dumps({"compiled": built.compiled, "seconds": built.seconds, "error": float(error)}))
"""


def test_winner_loads_by_import_in_a_fresh_process_without_compiling(tmp_path):
    kernel = KERNELS["forward"]
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    search.open_study(kernel.problem(SHAPE), storage).enqueue_trial(params(GOOD))
    record = search.search(kernel, SHAPE, trials=2, storage=storage, directory=tmp_path / "tuned", progress=False)

    env = {**os.environ, "AUTOTUNE_TUNED_DIR": str(tmp_path / "tuned")}
    result = subprocess.run([sys.executable, "-c", LOAD_IN_NEW_PROCESS], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["compiled"] is False, loaded  # machine code came from numba's cache
    assert loaded["error"] < 1e-3 and record["stored"]


def test_nearby_shape_is_seeded_with_the_winner_and_reuses_its_compiled_kernel(tmp_path):
    kernel = KERNELS["forward"]
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    search.open_study(kernel.problem(SHAPE), storage).enqueue_trial(params(GOOD))
    search.search(kernel, SHAPE, trials=1, storage=storage, directory=tmp_path / "tuned", progress=False)

    nearby = Shape(B=2, T=23, C=40, OC=24)
    search.search(kernel, nearby, trials=1, storage=storage, directory=tmp_path / "tuned", progress=False)
    [first] = [t for t in search.open_study(kernel.problem(nearby), storage).trials if t.state.is_finished()]
    assert first.params == params(GOOD) and first.user_attrs["seeded"]
    assert first.user_attrs["compiled"] is False  # built once for the first shape, reused from numba's cache


def test_a_stale_records_finalists_seed_the_new_study_first(tmp_path):
    """After a template change the old winner and finalists are the best guesses: seeded first."""
    problem = Problem("forward", 10, 20, 30)  # make_record's size
    winner = space.Config(mr=8, nr=16, kc=64, row_tiles=1, col_panels=2, order="rows-outer", threads=1)
    finalist = space.Config(mr=4, nr=16, kc=64, row_tiles=2, col_panels=1, order="panels-outer", threads=1)
    record, source = make_record(template_hash="an-older-template", config=winner.params(),
                                 finalists=[{"config": c.params(), "label": c.label(), "median_s": 1.0}
                                            for c in (winner, finalist)])
    store.save(record, source, tmp_path)
    assert store.entries(tmp_path)[0].status == "stale"
    study = optuna.create_study()
    search.warm_start(study, problem, tmp_path)
    seeded = []
    study.optimize(lambda trial: seeded.append(search.suggest(trial, problem)) or 0.0, n_trials=len(study.trials))
    assert seeded[:2] == [winner, finalist]
    assert space.analytical_config(problem) in seeded
