"""A real search on a tiny shape: broken, crashing and hanging candidates fail their trials, the winner is stored,
the study resumes, a rerun keeps the stored winner unless it loses beyond the noise, a fresh process loads
the winner by import without compiling, and the whole backward's timing revises a half that loses inside the op."""
import dataclasses
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import LANES, config, make_record

from autotune import (
    build,
    load,
    machine,
    measure,
    ops,
    render,
    sandbox,
    search,
    space,
    store,
)
from autotune import study as studies
from autotune.ops import KERNELS, Problem, Shape

SHAPE = Shape(B=2, T=19, C=40, OC=24)  # forward: M=38, N=24, K=40
GOOD = config(4, 1, 64, 2, 1, "panels-outer", 1)
WRONG = config(6, 1, 64, 1, 1, "rows-outer", 1)
BROKEN = config(5, 1, 64, 1, 2, "panels-outer", 1)
CRASHING = config(4, 2, 64, 1, 1, "rows-outer", 1)
HANGING = config(3, 2, 64, 1, 1, "rows-outer", 1)


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


def test_search_survives_bad_candidates_stores_winner_and_resumes(tmp_path, sabotaged_render, steady_anchor):
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    kernel = KERNELS["forward"]
    study = studies.open_study(kernel.problem(SHAPE), storage)
    build.build_kernel(kernel, GOOD)  # compiled here, so the time limit covers only the hanging candidate's wait
    for candidate in (WRONG, BROKEN, CRASHING, HANGING, GOOD):
        study.enqueue_trial(params(candidate))
    outcome = search.search(kernel, SHAPE, trials=5, storage=storage, directory=tmp_path / "tuned", progress=False,
                            time_limit_s=20)

    study = studies.open_study(kernel.problem(SHAPE), storage)
    failures = [t.user_attrs["failure"] for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert any(f.startswith("wrong result: out[") for f in failures), failures
    assert any("SyntaxError" in f for f in failures), failures
    assert any("the evaluating process died (killed by SIGSEGV)" in f for f in failures), failures
    assert any("killed: no result within the trial time limit (20 s)" in f for f in failures), failures
    assert outcome.record.config == GOOD and outcome.stored
    assert not _compiles_running_here(), "the hanging candidate's compile outlived its killed sandbox"
    assert outcome.record.trials["failed"] == 4 and outcome.record.trials["complete"] == 1
    assert outcome.record.baselines["blas"] > 0 and outcome.record.baselines["numpy"] > 0
    assert ("torch" in outcome.record.baselines) == (ops.torch_or_none() is not None)  # timed where installed

    search.search(kernel, SHAPE, trials=7, storage=storage, directory=tmp_path / "tuned", progress=False)
    counted = [t for t in studies.open_study(kernel.problem(SHAPE), storage).trials if t.state in search.COUNTED]
    assert len(counted) == 7  # resumed: 5 earlier trials + 2 new ones

    [entry] = store.entries(tmp_path / "tuned")
    assert entry.status == "ok"


def _compiles_running_here():
    """Command lines of live `autotune.build` processes compiling into this test process's cache."""
    cache = os.environ["AUTOTUNE_CACHE_DIR"]
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:  # ended meanwhile
            continue
        if b"autotune.build" in args and any(cache.encode() in a for a in args):
            found.append(b" ".join(args).decode(errors="replace"))
    return found


def test_every_candidate_is_timed_against_the_studys_anchor(tmp_path, steady_anchor):
    """The objective is a time ratio to the anchor config: the anchor's own choice at this size (the
    same loops: one task, one K block) scores about 1."""
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    kernel = KERNELS["forward"]
    problem = kernel.problem(SHAPE)
    study = studies.open_study(problem, storage)
    anchor = studies.anchor_of(study)
    assert anchor == space.analytical_config(problem)
    study.enqueue_trial(params(space.nearest_choice(anchor, problem)))
    search.search(kernel, SHAPE, trials=1, storage=storage, directory=tmp_path / "tuned", progress=False)
    [trial] = [t for t in studies.open_study(kernel.problem(SHAPE), storage).trials if t.state in search.COUNTED]
    assert 0.5 < trial.value < 2.0 and trial.user_attrs["gflops"] > 0 and trial.user_attrs["rounds"] >= 2


def test_a_rerun_keeps_the_stored_winner_unless_it_loses_beyond_the_noise(tmp_path, monkeypatch, steady_anchor):
    """The final comparison times the stored winner beside the new finalists; a record whose config
    is found again, or one that is not beaten beyond the noise, keeps its config. Its kernel runs
    only while faster than BLAS beyond the noise: a tie moves the loader to BLAS, and a record whose
    use does not change is not rewritten."""
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    kernel, directory = KERNELS["forward"], tmp_path / "tuned"
    studies.open_study(kernel.problem(SHAPE), storage).enqueue_trial(params(GOOD))
    first = search.search(kernel, SHAPE, trials=1, storage=storage, directory=directory, progress=False)
    assert first.stored
    won = dataclasses.replace(store.entries(directory)[0].record, use="kernel", vs_blas=(1.2, 1.1, 1.3), revised="")
    store.revise(won, directory)  # as if the kernel had beaten BLAS (here BLAS may have won)

    monkeypatch.setattr(search.measure, "speedup", lambda a, b, seed=0: search.measure.Speedup(1.01, 0.99, 1.03, 7))
    again = search.search(kernel, SHAPE, trials=3, storage=storage, directory=directory, progress=False)
    assert not again.stored and ("found again" in again.decision or "within noise" in again.decision)
    [entry] = store.entries(directory)
    assert "the loader now runs" in again.decision and entry.record.use in ("blas", "numpy")
    assert entry.record.revised.startswith("a later final comparison") and entry.record.config == first.record.config
    written = next(directory.glob("*.json")).read_text()

    monkeypatch.setattr(search.measure, "speedup", lambda a, b, seed=0: search.measure.Speedup(0.97, 0.9, 1.05, 7))
    third = search.search(kernel, SHAPE, trials=3, storage=storage, directory=directory, progress=False)
    assert not third.stored and "the loader now runs" not in third.decision
    assert next(directory.glob("*.json")).read_text() == written


LOAD_IN_NEW_PROCESS = """
import json
import numpy as np, tuned
from autotune import load
from autotune.ops import Problem
rng = np.random.default_rng(0)
inp = rng.standard_normal((1, 10, 30), dtype=np.float32)
weight = rng.standard_normal((20, 30), dtype=np.float32)
bias = rng.standard_normal(20, dtype=np.float32)
out = np.empty((1, 10, 20), np.float32)
tuned.matmul_forward(out, inp, weight, bias)
fn, threads = load.winners().function(Problem("forward", 10, 20, 30))
error = np.abs(out - (inp.astype(np.float64) @ weight.T.astype(np.float64) + bias)).max()
print(json.dumps({"hits": sum(fn.stats.cache_hits.values()), "misses": sum(fn.stats.cache_misses.values()),
                  "error": float(error)}))
"""


def test_a_stored_winner_loads_in_a_fresh_process_from_numbas_cache(tmp_path):
    """numba's own count in the new process: the dispatcher was loaded from its cache, not compiled,
    and no new cache index was written."""
    record, source = make_record()  # forward M=10 N=20 K=30, use="kernel"
    store.save(record, source, tmp_path)
    build.build(source, record.compile_flags)  # what the search did: compiled once, cached on disk
    cache_files = set(machine.cache_dir().rglob("*.nbi"))
    env = {**os.environ, "AUTOTUNE_TUNED_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", LOAD_IN_NEW_PROCESS], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["misses"] == 0 and loaded["hits"] == 1, loaded
    assert set(machine.cache_dir().rglob("*.nbi")) == cache_files
    assert loaded["error"] < 1e-3


def test_a_new_kernel_is_compiled_in_a_child_and_loaded_here_from_numbas_cache():
    """This process runs the machine code numba cached, the code a user's process loads, not code it
    compiled itself (build.py: with NR = 48 the two ran 13.6 and 207.5 GF/s)."""
    kernel = KERNELS["forward"]
    source = render.render(kernel, config(5, 1, 96, 1, 1, "rows-outer", 1))  # a config no other test builds
    built = build.build(source, render.COMPILE_FLAGS)
    fn = built.function(kernel)
    assert built.compiled
    assert sum(fn.stats.cache_hits.values()) == 1 and sum(fn.stats.cache_misses.values()) == 0


def test_a_module_that_does_not_compile_raises_its_own_error_here():
    markers = set((machine.cache_dir() / "kernels").glob("*.compiled"))
    with pytest.raises(SyntaxError):
        build.build("def broken(:\n    pass\n", {})
    assert set((machine.cache_dir() / "kernels").glob("*.compiled")) == markers  # nothing marked as cached


def test_nearby_shape_is_seeded_with_the_winner_and_reuses_its_compiled_kernel(tmp_path):
    kernel = KERNELS["forward"]
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    studies.open_study(kernel.problem(SHAPE), storage).enqueue_trial(params(GOOD))
    search.search(kernel, SHAPE, trials=1, storage=storage, directory=tmp_path / "tuned", progress=False)

    nearby = Shape(B=2, T=23, C=40, OC=24)
    search.search(kernel, nearby, trials=1, storage=storage, directory=tmp_path / "tuned", progress=False)
    [first] = [t for t in studies.open_study(kernel.problem(nearby), storage).trials if t.state.is_finished()]
    assert first.params == params(GOOD) and first.user_attrs["seeded"]
    assert first.user_attrs["compiled"] is False  # built once for the first shape, reused from numba's cache


def test_a_stale_records_winner_seeds_the_new_study_first_and_its_finalists_follow(tmp_path):
    """After a template change the old winner and finalists are the best guesses."""
    problem = Problem("forward", 10, 20, 30)  # make_record's size
    winner = config(4, 1, 64, 1, 2, "rows-outer", 1)
    finalist = config(3, 1, 64, 2, 1, "panels-outer", 1)
    record, source = make_record(older_template=True, config=winner,
                                 finalists=((winner, 1.0), (finalist, 1.1)))
    store.save(record, source, tmp_path)
    assert store.entries(tmp_path)[0].status == "stale"
    study = optuna.create_study()
    search.warm_start(study, problem, tmp_path, budget=100)
    seeded = []
    study.optimize(lambda trial: seeded.append(search.suggest(trial, problem)) or 0.0, n_trials=len(study.trials))
    assert seeded[0] == winner and finalist in seeded
    assert space.nearest_choice(space.analytical_config(problem), problem) in seeded


def test_a_new_study_is_seeded_with_the_model_for_each_nr_with_a_packed_and_in_place(tmp_path):
    """With nothing stored: the analytical model's configs, NR that pads N least first, each with A
    packed and then read in place."""
    problem = Problem("forward", 200, 3 * LANES, 640)  # N is three vectors: no padding with NR = 3 vectors
    study = optuna.create_study()
    search.warm_start(study, problem, tmp_path, budget=100)
    seeded = []
    study.optimize(lambda trial: seeded.append(search.suggest(trial, problem)) or 0.0, n_trials=len(study.trials))
    model = [c for c in seeded if c.kc != problem.K]
    assert [c.nr // LANES for c in model[:2]] == [1, 1] and [c.pack_a for c in model[:2]] == [True, False]
    assert [c.nr // LANES for c in model[2:4]] == [3, 3]
    assert all(b == dataclasses.replace(a, pack_a=False) and a.pack_a for a, b in zip(model[::2], model[1::2]))


def test_a_weight_gradient_whose_n_is_one_panel_is_seeded_with_b_read_in_place(tmp_path):
    problem = Problem("backward_weight", 48, 2 * LANES, 4096)  # N is two vectors: the model's NR
    study = optuna.create_study()
    search.warm_start(study, problem, tmp_path, budget=10)
    seeded = []
    study.optimize(lambda trial: seeded.append(search.suggest(trial, problem)) or 0.0, n_trials=len(study.trials))
    assert seeded[0].nr == problem.N and seeded[0].pack_b
    assert seeded[1:3] == [dataclasses.replace(seeded[0], pack_a=False), dataclasses.replace(seeded[0], pack_b=False)]


def test_a_weight_kernel_reading_inp_in_place_passes_the_searchs_checks(tmp_path, steady_anchor):
    """The search verifies at an edge size too: there N must stay a multiple of NR, or B read in place
    raises."""
    kernel = KERNELS["backward_weight"]
    shape = Shape(B=1, T=37, C=2 * LANES, OC=5)
    in_place = config(4, 2, 64, 1, 1, "rows-outer", 1, pack_a=False, pack_b=False)
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    studies.open_study(kernel.problem(shape), storage).enqueue_trial(params(in_place))
    search.search(kernel, shape, trials=1, storage=storage, directory=tmp_path / "tuned", progress=False)
    [trial] = [t for t in studies.open_study(kernel.problem(shape), storage).trials if t.state.is_finished()]
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs.get("failure")


def test_seeds_take_half_the_budget_and_try_every_nr_in_the_stored_winners_layout(tmp_path):
    """The sampler gets at least half of a new study's trials; within the seeds, the stored winner is
    tried with the model's block for every other NR, in its own K blocks, order and A layout."""
    problem = Problem("forward", 400, 4 * LANES, 640)
    winner = config(4, 1, 128, 2, 2, "rows-outer", 2)
    record, source = make_record(problem=problem, older_template=True, config=winner, finalists=((winner, 1.0),))
    store.save(record, source, tmp_path)
    study = optuna.create_study()
    search.warm_start(study, problem, tmp_path, budget=14)
    seeded = []
    study.optimize(lambda trial: seeded.append(search.suggest(trial, problem)) or 0.0, n_trials=len(study.trials))
    assert len(seeded) == 7 and seeded[0] == winner and seeded[1] == dataclasses.replace(winner, slice_b=True)
    assert seeded[2] == dataclasses.replace(winner, bias_slice=True)
    assert seeded[3] == dataclasses.replace(winner, pack_blocks=True)
    variants = seeded[4:7]
    assert all(c.slice_b for c in variants)
    assert sorted(c.nr // LANES for c in variants) == [2, 3, 4]
    assert all((c.kc, c.order, c.threads, c.pack_a) == (winner.kc, winner.order, winner.threads, winner.pack_a)
               for c in variants)
    assert all(abs(c.mr * c.row_tiles / (winner.mr * winner.row_tiles) - 1) <= 0.5 for c in variants)


def test_the_other_kernels_winners_at_the_nearest_shape_seed_a_new_study(tmp_path):
    """The weight gradient's study starts from the forward's winner at the nearest llm.c shape (the
    three kernels share their micro-kernel), moved to the weight gradient's choices; a record of a
    farther shape does not seed, nor does one without an llm.c shape."""
    near, far, shapeless = (config(4, 1, 64, 1, 2, "rows-outer", 1), config(3, 1, 64, 2, 1, "panels-outer", 1),
                            config(5, 1, 64, 1, 1, "rows-outer", 1))
    for shape, winner in (("B=1,T=10,C=30,OC=20", near), ("B=8,T=64,C=300,OC=200", far), ("?", shapeless)):
        problem = KERNELS["forward"].problem(Shape.parse(shape)) if shape != "?" else Problem("forward", 3, 4, 5)
        record, source = make_record(problem=problem, config=winner, shape=shape)
        store.save(record, source, tmp_path)
    problem = KERNELS["backward_weight"].problem(Shape(B=1, T=12, C=30, OC=20))
    study = optuna.create_study()
    search.warm_start(study, problem, tmp_path, budget=100)
    seeded = []
    study.optimize(lambda trial: seeded.append(search.suggest(trial, problem)) or 0.0, n_trials=len(study.trials))
    assert seeded[0] == space.nearest_choice(near, problem)
    assert not {space.nearest_choice(c, problem) for c in (far, shapeless)} & set(seeded)


def test_the_step_is_timed_and_the_fastest_plan_of_its_three_kernels_is_stored(tmp_path, monkeypatch):
    """agree_step times every plan the loader could run for the forward and both backward halves as
    one step; the fastest revises each record it changes (a forward kernel that slows the step goes
    to BLAS, and backward halves stored on BLAS go back to their kernels), and the loader runs it."""
    directory = tmp_path / "tuned"
    shape = Shape(B=1, T=13, C=24, OC=17)
    serial = config(4, 1, 64, 1, 1, "rows-outer", 1)
    for name in ("forward", "backward_input"):
        record, source = make_record(problem=KERNELS[name].problem(shape), config=serial)
        assert store.save(record, source, directory)
    assert search.agree_step(shape, directory) is None  # the weight gradient has no record yet
    record, source = make_record(problem=KERNELS["backward_weight"].problem(shape), config=serial)
    assert store.save(record, source, directory)

    sentence = search.agree_step(shape, directory)  # real timings: kept or revised, records stay usable
    assert sentence.startswith(("kept", "revised")) and all(e.status == "ok" for e in store.entries(directory))
    for entry in store.entries(directory):  # the forward on its kernel, both halves on BLAS
        use = "kernel" if entry.record.problem.kernel == "forward" else "blas"
        store.revise(dataclasses.replace(entry.record, use=use, revised=""), directory)
    timed = []

    def forward_in_blas_and_backward_kernels_win(contenders, **options):
        timed.extend(contenders)
        return {plan: measure.Timing.of([1.0 if plan == ("blas", "kernel", "kernel") else 2.0] * 6)
                for plan in contenders}

    monkeypatch.setattr(search.measure, "compare", forward_in_blas_and_backward_kernels_win)
    assert search.agree_step(shape, directory).startswith("revised")
    assert set(timed) == set(itertools.product(("kernel", "blas"), repeat=3))  # serial kernels: every plan loads
    revised = {e.record.problem.kernel: e.record for e in store.entries(directory)}
    assert {name: r.use for name, r in revised.items()} == {"forward": "blas", "backward_input": "kernel",
                                                           "backward_weight": "kernel"}
    assert all(r.revised.startswith("the step: blas for the forward, then kernel for dinp") for r in revised.values())
    winners = load.Winners(directory)
    assert winners.choice(KERNELS["forward"].problem(shape)).baseline == "blas"
    assert winners.choice(KERNELS["backward_weight"].problem(shape)).config == serial


def test_the_whole_backward_is_timed_and_a_half_that_loses_there_switches_to_blas(tmp_path, monkeypatch):
    """agree_backward times the backward as the loader runs it beside plans that swap a half for
    BLAS; the fastest plan revises the records, and the loader then runs it."""
    directory = tmp_path / "tuned"
    shape = Shape(B=1, T=13, C=24, OC=17)
    serial = config(4, 1, 64, 1, 1, "rows-outer", 1)
    records = {}
    for name in ("backward_input", "backward_weight"):
        problem = KERNELS[name].problem(shape)
        records[name], source = make_record(problem=problem, config=serial)
        assert store.save(records[name], source, directory)
    assert search.agree_backward(Shape(B=1, T=13, C=24, OC=99), directory) is None  # no records there

    sentence = search.agree_backward(shape, directory)  # real timings: kept or revised, records stay usable
    assert sentence.startswith(("kept", "revised")) and all(e.status == "ok" for e in store.entries(directory))

    for name, record in records.items():  # back to kernels for both halves
        store.revise(record, directory)
    timed = []

    def weight_half_in_blas_wins(contenders, **options):
        timed.extend(contenders)
        fast = {("kernel", "blas"), ("blas", "blas")}
        return {plan: measure.Timing.of([1.0 if plan in fast else 2.0] * 6) for plan in contenders}

    monkeypatch.setattr(search.measure, "compare", weight_half_in_blas_wins)
    assert search.agree_backward(shape, directory).startswith("revised")
    assert set(timed) == {("kernel", "kernel"), ("kernel", "blas"), ("blas", "kernel"), ("blas", "blas")}
    revised = {e.record.problem.kernel: e.record for e in store.entries(directory)}
    assert revised["backward_input"].use == "kernel" and revised["backward_weight"].use == "blas"
    assert "the speed of kernel for dinp + kernel for dweight" in revised["backward_weight"].revised
    assert "use revised since: the whole backward:" in next(directory.glob("backward_weight-*.py")).read_text()
    winners = load.Winners(directory)
    assert winners.choice(KERNELS["backward_weight"].problem(shape)).baseline == "blas"
    assert winners.choice(KERNELS["backward_input"].problem(shape)).config == serial


def _backward_records_on_blas(directory, shape):
    """Records of both backward halves at `shape` (a serial kernel each), both running BLAS."""
    serial = config(4, 1, 64, 1, 1, "rows-outer", 1)
    for name in ("backward_input", "backward_weight"):
        record, source = make_record(problem=KERNELS[name].problem(shape), config=serial)
        assert store.save(dataclasses.replace(record, use="blas"), source, directory)


def test_a_backward_on_blas_moves_to_kernels_only_when_they_are_faster_beyond_the_noise(tmp_path, monkeypatch):
    """Within the noise, the whole backward keeps BLAS rather than moving a half to its kernel; a
    plan with kernels faster beyond the noise is taken."""
    directory, shape = tmp_path / "tuned", Shape(B=1, T=13, C=24, OC=17)
    _backward_records_on_blas(directory, shape)

    def kernels_take(seconds):
        def compare(contenders, **options):  # the all-BLAS plan takes 1.0 s in every round
            return {plan: measure.Timing.of([1.0] * 6 if plan == ("blas", "blas") else seconds) for plan in contenders}
        return compare

    monkeypatch.setattr(search.measure, "compare", kernels_take([0.97, 1.02, 0.99, 1.01, 0.98, 0.995]))
    assert search.agree_backward(shape, directory).startswith("kept blas for dinp + blas for dweight")
    assert {e.record.use for e in store.entries(directory)} == {"blas"}

    monkeypatch.setattr(search.measure, "compare", kernels_take([0.9] * 6))
    assert search.agree_backward(shape, directory).startswith("revised")
    assert "kernel" in {e.record.use for e in store.entries(directory)}


def test_a_plan_that_wins_one_timing_but_not_the_second_changes_nothing(tmp_path, monkeypatch):
    """The fastest plan is timed again beside the stored one: the records change only if it wins
    there too, so one lucky or disturbed timing does not move a use."""
    directory, shape = tmp_path / "tuned", Shape(B=1, T=13, C=24, OC=17)
    _backward_records_on_blas(directory, shape)
    timings = []

    def kernels_win_then_tie(contenders, **options):
        kernels = [0.8] * 6 if not timings else [1.0] * 6
        timings.append(tuple(contenders))
        return {plan: measure.Timing.of([1.0] * 6 if plan == ("blas", "blas") else kernels) for plan in contenders}

    monkeypatch.setattr(search.measure, "compare", kernels_win_then_tie)
    sentence = search.agree_backward(shape, directory)
    assert sentence.startswith("kept blas for dinp + blas for dweight") and "second timing" in sentence
    assert len(timings) == 2 and set(timings[1]) == {("blas", "blas"), ("kernel", "kernel")}
    assert {e.record.use for e in store.entries(directory)} == {"blas"}


def test_a_kept_winner_changes_use_only_when_a_second_comparison_agrees(tmp_path):
    """_revise_use: a final comparison that would move a record from BLAS to its kernel is timed
    again; a second that ties keeps BLAS, a second that agrees moves it (and says both)."""
    directory = tmp_path / "tuned"
    record, source = make_record()
    assert store.save(dataclasses.replace(record, use="blas"), source, directory)
    [incumbent] = store.entries(directory)
    label = record.config.label()

    def timed(kernel_seconds):
        return {label: measure.Timing.of(kernel_seconds), "blas": measure.Timing.of([1.0] * 7)}

    faster, tie = [0.8] * 7, [0.99, 1.01, 1.0, 0.98, 1.02, 1.0, 0.995]
    said = search._revise_use(incumbent, timed(faster), directory, lambda: timed(tie))
    assert "the loader still runs blas here" in said
    assert store.entries(directory)[0].record.use == "blas"
    said = search._revise_use(incumbent, timed(faster), directory, lambda: timed(faster))
    assert "the loader now runs kernel here (two final comparisons in a row" in said
    assert store.entries(directory)[0].record.use == "kernel"
    assert search._revise_use(store.entries(directory)[0], timed(faster), directory, lambda: 1 / 0) == ""


def test_a_losing_kernel_gives_way_to_blas_with_beta_unless_another_fallback_beats_it_beyond_the_noise():
    blas = measure.Timing.of([1.0] * 6)
    close = measure.Timing.of([0.97, 1.02, 0.99, 1.01, 0.98, 0.995])  # a faster median, within the noise
    slow_kernel = measure.Timing.of([1.5] * 6)
    faster, fastest = measure.Timing.of([0.9] * 6), measure.Timing.of([0.8] * 6)
    assert search._use(slow_kernel, {"blas": blas, "numpy": close})[0] == "blas"
    assert search._use(slow_kernel, {"blas": blas, "numpy": close, "torch": close})[0] == "blas"
    assert search._use(slow_kernel, {"blas": blas, "numpy": measure.Timing.of([0.8] * 6)})[0] == "numpy"
    assert search._use(slow_kernel, {"blas": blas, "numpy": faster, "torch": fastest})[0] == "torch"
    assert search._use(slow_kernel, {"blas": blas, "numpy": fastest, "torch": faster})[0] == "numpy"
    assert search._use(close, {"blas": blas, "numpy": blas})[0] == "blas"  # a kernel that ties BLAS
    assert search._use(measure.Timing.of([0.8] * 6), {"blas": blas, "numpy": blas})[0] == "kernel"


def test_plans_are_not_timed_where_a_record_runs_pytorch_and_it_is_not_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(ops, "torch_or_none", lambda: None)
    shape = Shape(1, 8, 16, 16)
    for kernel in KERNELS.values():
        use = "torch" if kernel.name == "backward_weight" else "blas"
        store.save(*make_record(problem=kernel.problem(shape), use=use), tmp_path)
    assert search.agree_backward(shape, tmp_path) == search._NOT_RUNNABLE
    assert search.agree_step(shape, tmp_path) == search._NOT_RUNNABLE
    assert {e.record.use for e in store.entries(tmp_path)} == {"torch", "blas"}  # nothing revised


class LoadedMachine:
    """An evaluator whose anchor runs `slowdowns[i]` times its usual time in its i-th timing (the
    last one after that): what a load on one of the cores does to a parallel anchor."""

    def __init__(self, slowdowns, ratio=0.5):
        self.slowdowns, self.ratio, self.timings = list(slowdowns), ratio, 0

    def evaluate(self, source, config, keep_going):
        slowdown = self.slowdowns[min(self.timings, len(self.slowdowns) - 1)]
        self.timings += 1
        ratios = [self.ratio / slowdown]
        while keep_going(ratios):
            ratios.append(self.ratio / slowdown)
        return {"ratios": ratios, "seconds": [1e-3] * len(ratios), "compile_s": 0.0, "compiled": False,
                "anchor_slowdown": slowdown, "anchor_s": slowdown}

    def take_pace(self, result):
        self.slowdowns = [s / result["anchor_s"] for s in self.slowdowns]


def _objective_trial(machine_load, monkeypatch):
    monkeypatch.setattr(search, "DISTURBED_PAUSE_S", 0.0)
    problem = KERNELS["forward"].problem(SHAPE)
    study = optuna.create_study()
    study.enqueue_trial(params(GOOD))
    study.optimize(search.Objective(problem, machine_load), n_trials=1, catch=(Exception,))
    return study.trials[0]


def test_a_trial_whose_anchor_ran_slow_is_timed_again(monkeypatch):
    """A 1-thread kernel once read 2.2x faster than the 2-thread anchor, twice its real speed, while
    something else took a core: the anchor ran 2.5x its usual time."""
    load = LoadedMachine([2.5, 1.0])
    trial = _objective_trial(load, monkeypatch)
    assert load.timings == 2 and trial.value == 0.5
    assert "2.50x its usual time: timed again" in trial.user_attrs["disturbed"]


def test_a_load_that_stays_through_every_timing_is_the_machines_new_pace(monkeypatch):
    """Failing such trials once failed whole studies in CI while the other pytest worker ran."""
    load = LoadedMachine([2.5])
    trial = _objective_trial(load, monkeypatch)
    assert load.timings == search.DISTURBED_RETRIES + 1
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.5 / 2.5
    assert "scored at the machine's new pace" in trial.user_attrs["new_pace"]
    assert load.slowdowns == [1.0]  # the next trial is timed against the loaded anchor


def test_the_sandbox_reports_how_much_slower_than_usual_its_anchor_ran():
    kernel = KERNELS["forward"]
    problem = kernel.problem(SHAPE)
    with sandbox.Sandbox(kernel, problem, space.analytical_config(problem), 60) as evaluator:
        result = evaluator.evaluate(render.render(kernel, GOOD), GOOD, lambda ratios: len(ratios) < 3)
        assert 0 < evaluator.usual_anchor_s < 1 and 0.2 < result["anchor_slowdown"] < 5


def test_a_new_best_that_ties_a_winner_on_blas_but_beats_blas_twice_is_stored(tmp_path):
    """_ahead_of_the_fallback: the stored winner runs BLAS (it did not beat it beyond the noise) and
    the new best, a tie with it, did: the new best replaces it only if a second comparison agrees;
    a stored winner ahead of BLAS, one the new best does not tie, or the same config found again
    is left to _decision and _revise_use."""
    directory = tmp_path / "tuned"
    record, source = make_record()
    assert store.save(dataclasses.replace(record, use="blas"), source, directory)
    [incumbent] = store.entries(directory)
    flipped = "rows-outer" if record.config.order == "panels-outer" else "panels-outer"
    best = dataclasses.replace(record.config, order=flipped)
    # BLAS takes 1.0: 0.985 is 1.015x it (under the 2% noise threshold), 0.97 1.031x, and 1.015x 0.985
    near_blas, ahead, well_ahead, tie = [0.985] * 7, [0.97] * 7, [0.8] * 7, [0.99, 1.01, 1.0, 0.98, 1.02, 1.0, 0.995]

    def timed(kept_seconds, best_seconds):
        return {record.config.label(): measure.Timing.of(kept_seconds), best.label(): measure.Timing.of(best_seconds),
                "blas": measure.Timing.of([1.0] * 7)}

    def never():
        raise AssertionError("no second comparison was needed")

    replace, said = search._ahead_of_the_fallback(best, incumbent, timed(near_blas, ahead), "kept",
                                                  lambda: timed(near_blas, ahead))
    assert replace and "ahead of the fallback in two final comparisons in a row" in said
    replace, said = search._ahead_of_the_fallback(best, incumbent, timed(near_blas, ahead), "kept",
                                                  lambda: timed(near_blas, tie))
    assert not replace and said.startswith("kept; it ran ahead of the fallback once")
    assert search._ahead_of_the_fallback(best, incumbent, timed(well_ahead, well_ahead), "kept", never) == (False, "kept")
    assert search._ahead_of_the_fallback(best, incumbent, timed(near_blas, near_blas), "kept", never) == (False, "kept")
    assert search._ahead_of_the_fallback(best, incumbent, timed(tie, well_ahead), "kept", never) == (False, "kept")
    assert search._ahead_of_the_fallback(record.config, incumbent, timed(tie, ahead), "kept", never) == (False, "kept")


def test_a_trial_another_worker_finished_does_not_end_the_search():
    """On SQLite two workers can take the same enqueued trial; the second to finish it is refused
    ("Cannot tell a COMPLETE trial") and the search goes on. Other errors still propagate."""
    class Study:
        calls = 0

        def optimize(self, objective, **options):
            self.calls += 1
            if self.calls == 1:
                raise ValueError("Cannot tell a COMPLETE trial.")

    study = Study()
    search._optimize(study, objective=None, n_trials=4, timeout=60, callbacks=[])
    assert study.calls == 2

    class Broken:
        def optimize(self, objective, **options):
            raise ValueError("something else")

    with pytest.raises(ValueError, match="something else"):
        search._optimize(Broken(), objective=None, n_trials=4, timeout=None, callbacks=[])
