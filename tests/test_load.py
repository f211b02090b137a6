"""The import API: right answers at any shape, clear errors for bad input, safe fallbacks."""
import json
import os
import re
import subprocess
import sys
import warnings

import numba
import numpy as np
import pytest

import tuned
from autotune import blas, load, machine, ops, render, space, store
from autotune.ops import KERNELS, OPS, Problem, Shape
from conftest import LANES, make_record


def arrays(rng, B, T, C, OC):
    f = lambda *shape: rng.standard_normal(shape, dtype=np.float32)
    return dict(inp=f(B, T, C), weight=f(OC, C), bias=f(OC), out=f(B, T, OC), dout=f(B, T, OC),
                dinp=f(B, T, C), dweight=f(OC, C), dbias=f(OC))


def f64(a):
    return a.astype(np.float64)


def _tuned_record(problem, use):
    """A record of `problem` as a search would store it, with the analytical config; `use` what won."""
    kernel = KERNELS[problem.kernel]
    config = space.analytical_config(problem)
    source = render.render(kernel, config)
    record, _ = make_record(problem=problem, config=config, use=use, finalists=((config, 1.0),),
                            template=kernel.template, template_hash=render.template_hash(kernel),
                            source_sha256=store.source_digest(source))
    return record, source


SHAPES = [(1, 1, 1, 1), (2, 3, 5, 7), (1, 13, 48, 17), (3, 11, 67, 101)]


needs_torch = pytest.mark.skipif(ops.torch_or_none() is None, reason="PyTorch (the optional extra) is not installed")


@pytest.fixture(params=["kernels", "blas", pytest.param("torch", marks=needs_torch)])
def dispatched(request, tmp_path, monkeypatch):
    """The entry points in front of generated kernels (a record of every test size, the kernels won),
    in front of BLAS (no record: nothing tuned near) and in front of PyTorch (a record of every test
    size, PyTorch won)."""
    if request.param != "blas":
        use = "kernel" if request.param == "kernels" else request.param
        for B, T, C, OC in SHAPES:
            for kernel in KERNELS.values():
                store.save(*_tuned_record(kernel.problem(Shape(B, T, C, OC)), use), tmp_path)
    monkeypatch.setenv("AUTOTUNE_TUNED_DIR", str(tmp_path))
    return request.param


def runs_kernels(op, shape):
    """Whether the entry point of `op` dispatches generated kernels at `shape` (else a baseline)."""
    return {load.winners().choice(k.problem(Shape(*shape))).config is not None for k in map(KERNELS.get, OPS[op])} == {True}


@pytest.mark.parametrize("B, T, C, OC", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward(rng, dispatched, B, T, C, OC, with_bias):
    a = arrays(rng, B, T, C, OC)
    assert runs_kernels("forward", (B, T, C, OC)) == (dispatched == "kernels")
    if dispatched == "torch":
        assert load.winners().function(Problem("forward", B * T, OC, C))[0] is KERNELS["forward"].torch
    bias = a["bias"] if with_bias else None
    tuned.matmul_forward(a["out"], a["inp"], a["weight"], bias)
    expected = f64(a["inp"]) @ f64(a["weight"]).T + (f64(a["bias"]) if with_bias else 0)
    np.testing.assert_allclose(a["out"], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("B, T, C, OC", SHAPES)
@pytest.mark.parametrize("with_dbias", [True, False])
def test_backward_accumulates(rng, dispatched, B, T, C, OC, with_dbias):
    a = arrays(rng, B, T, C, OC)
    assert runs_kernels("backward", (B, T, C, OC)) == (dispatched == "kernels")
    dbias = a["dbias"] if with_dbias else None
    before = {k: f64(a[k]) for k in ("dinp", "dweight", "dbias")}
    tuned.matmul_backward(a["dinp"], a["dweight"], dbias, a["dout"], a["inp"], a["weight"])
    dout, inp = f64(a["dout"]).reshape(-1, OC), f64(a["inp"]).reshape(-1, C)
    np.testing.assert_allclose(a["dinp"], before["dinp"] + (dout @ f64(a["weight"])).reshape(B, T, C),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a["dweight"], before["dweight"] + dout.T @ inp, rtol=1e-4, atol=1e-4)
    expected_dbias = before["dbias"] + dout.sum(axis=0) if with_dbias else before["dbias"]
    np.testing.assert_allclose(a["dbias"], expected_dbias, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("B, T, C, OC", [(0, 3, 4, 5), (2, 0, 4, 5), (2, 3, 0, 5), (2, 3, 4, 0)])
def test_zero_sizes_behave_like_numpy(rng, B, T, C, OC):
    a = arrays(rng, B, T, C, OC)
    tuned.matmul_forward(a["out"], a["inp"], a["weight"], a["bias"])
    np.testing.assert_allclose(a["out"], a["inp"] @ a["weight"].T + a["bias"], atol=1e-6)
    before = {k: a[k].copy() for k in ("dinp", "dweight", "dbias")}
    tuned.matmul_backward(a["dinp"], a["dweight"], a["dbias"], a["dout"], a["inp"], a["weight"])
    np.testing.assert_allclose(a["dinp"], before["dinp"] + a["dout"] @ a["weight"], atol=1e-6)
    np.testing.assert_allclose(a["dweight"], before["dweight"] + np.einsum("bto,btc->oc", a["dout"], a["inp"]),
                               atol=1e-6)
    np.testing.assert_allclose(a["dbias"], before["dbias"] + a["dout"].sum(axis=(0, 1)), atol=1e-6)


def forward_call(a, **override):
    args = dict(out=a["out"], inp=a["inp"], weight=a["weight"], bias=a["bias"])
    args.update(override)
    tuned.matmul_forward(**args)


def backward_call(a, **override):
    args = {k: a[k] for k in ("dinp", "dweight", "dbias", "dout", "inp", "weight")}
    args.update(override)
    tuned.matmul_backward(**args)


BAD_FORWARD = [
    ("inp", lambda a: a["inp"].astype(np.float64), TypeError, "inp must be float32, got float64"),
    ("inp", lambda a: a["inp"].astype(np.int32), TypeError, "inp must be float32, got int32"),
    ("inp", lambda a: a["inp"].tolist(), TypeError, "inp must be a numpy array"),
    ("inp", lambda a: np.repeat(a["inp"], 2, axis=2)[:, :, ::2], ValueError, "inp must be C-contiguous"),
    ("inp", lambda a: np.ascontiguousarray(a["inp"].transpose(1, 0, 2)).transpose(1, 0, 2), ValueError,
     "inp must be C-contiguous"),
    ("inp", lambda a: a["inp"][0], ValueError, "inp must have 3 dimensions (B, T, C) = (2, 3, 5), got shape (3, 5)"),
    ("inp", lambda a: a["inp"].reshape(6, 5), ValueError, "inp must have 3 dimensions (B, T, C) = (2, 3, 5), got shape (6, 5)"),
    ("weight", lambda a: np.ascontiguousarray(a["weight"][:, :4]), ValueError,
     "weight has shape (7, 4), expected (OC, C) = (7, 5)"),
    ("weight", lambda a: a["weight"].T, ValueError, "weight has shape (5, 7), expected (OC, C) = (7, 5)"),
    ("bias", lambda a: a["bias"][:6].copy(), ValueError, "bias has shape (6,), expected (OC,) = (7,)"),
    ("out", lambda a: a["out"][:, :2].copy(), ValueError, "out has shape (2, 2, 7), expected (B, T, OC) = (2, 3, 7)"),
    ("out", lambda a: np.ones((2, 3, 7), np.float64), TypeError, "out must be float32"),
    ("bias", lambda a: a["out"].reshape(-1)[-7:], ValueError, "out overlaps bias"),
]


@pytest.mark.parametrize("argument, make, error, message", BAD_FORWARD)
def test_forward_rejects_bad_input(rng, argument, make, error, message):
    a = arrays(rng, 2, 3, 5, 7)
    with pytest.raises(error) as caught:
        forward_call(a, **{argument: make(a)})
    assert message in str(caught.value)


BAD_BACKWARD = [
    ("dout", lambda a: a["dout"][:, :, :6].copy(), ValueError, "dout has shape (2, 3, 6), expected (B, T, OC) = (2, 3, 7)"),
    ("dinp", lambda a: a["dinp"][:1].copy(), ValueError, "dinp has shape (1, 3, 5), expected (B, T, C) = (2, 3, 5)"),
    ("dweight", lambda a: a["dweight"].astype(np.float16), TypeError, "dweight must be float32"),
    ("dbias", lambda a: np.zeros(8, np.float32), ValueError, "dbias has shape (8,), expected (OC,) = (7,)"),
    ("inp", lambda a: a["inp"][:, :, :4].copy(), ValueError, "inp has shape (2, 3, 4), expected (B, T, C) = (2, 3, 5)"),
    ("dbias", lambda a: [0.0] * 7, TypeError, "dbias must be a numpy array of float32 (OC,) = (7,), got list"),
    ("dinp", lambda a: a["inp"], ValueError, "dinp overlaps inp"),
    ("dweight", lambda a: a["weight"], ValueError, "dweight overlaps weight"),
    ("dbias", lambda a: a["dinp"].reshape(-1)[3:10], ValueError, "dinp overlaps dbias"),  # two outputs
    ("dbias", lambda a: a["dout"].reshape(-1)[-7:], ValueError, "dbias overlaps dout"),  # the last bytes only
]


@pytest.mark.parametrize("argument, make, error, message", BAD_BACKWARD)
def test_backward_rejects_bad_input(rng, argument, make, error, message):
    a = arrays(rng, 2, 3, 5, 7)
    with pytest.raises(error) as caught:
        backward_call(a, **{argument: make(a)})
    assert message in str(caught.value)


def test_output_may_not_alias_an_input(rng):
    a = arrays(rng, 2, 3, 5, 5)
    with pytest.raises(ValueError, match="out overlaps inp"):
        tuned.matmul_forward(a["inp"], a["inp"], a["weight"], a["bias"])


def test_read_only_output_is_refused(rng):
    a = arrays(rng, 2, 3, 5, 7)
    a["out"].flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        forward_call(a)


def test_read_only_inputs_are_taken(rng):
    """numba types a read-only array apart from a writable one: the compiled check takes both as inputs."""
    a = arrays(rng, 2, 3, 5, 7)
    before = {k: f64(a[k]) for k in ("dinp", "dweight", "dbias")}
    for name in ("inp", "weight", "bias", "dout"):
        a[name].flags.writeable = False
    forward_call(a)
    backward_call(a)
    dout, inp = f64(a["dout"]).reshape(-1, 7), f64(a["inp"]).reshape(-1, 5)
    np.testing.assert_allclose(a["out"], f64(a["inp"]) @ f64(a["weight"]).T + f64(a["bias"]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a["dweight"], before["dweight"] + dout.T @ inp, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a["dinp"].reshape(-1, 5), before["dinp"].reshape(-1, 5) + dout @ f64(a["weight"]),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a["dbias"], before["dbias"] + dout.sum(axis=0), rtol=1e-4, atol=1e-4)


def test_foreign_and_corrupt_records_warn_once_and_fall_back(rng, tmp_path, monkeypatch):
    (tmp_path / "forward-6x7x5-abc.json").write_text("{not json")
    record, source = make_record(problem=Problem("forward", 6, 7, 5), fingerprint={"id": "elsewhere"})
    (tmp_path / "forward-6x7x5-elsewhere.json").write_text(json.dumps(record.to_json()))
    (tmp_path / "forward-6x7x5-elsewhere.py").write_text(store.SOURCE_MARKER + source)
    monkeypatch.setenv("AUTOTUNE_TUNED_DIR", str(tmp_path))
    a = arrays(rng, 2, 3, 5, 7)
    with pytest.warns(UserWarning) as caught:
        forward_call(a)
    messages = [str(w.message) for w in caught]
    assert any(re.search(r"not using 1 record\(s\).*corrupt", m) for m in messages), messages
    assert any(re.search(r"no record .* made on this machine .* from elsewhere", m) for m in messages), messages
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forward_call(a)  # once per directory
    np.testing.assert_allclose(a["out"], a["inp"] @ a["weight"].T + a["bias"], rtol=1e-4, atol=1e-4)


def test_records_of_other_machines_beside_this_ones_are_skipped_quietly(rng, tmp_path, monkeypatch):
    """tuned/ ships several machine kinds' records side by side: on one of them, the others are expected."""
    record, source = make_record(problem=Problem("forward", 6, 7, 5), fingerprint={"id": "elsewhere"})
    (tmp_path / "forward-6x7x5-elsewhere.json").write_text(json.dumps(record.to_json()))
    (tmp_path / "forward-6x7x5-elsewhere.py").write_text(store.SOURCE_MARKER + source)
    store.save(*make_record(use="blas"), tmp_path)  # this machine's own record (BLAS won: nothing to compile)
    monkeypatch.setenv("AUTOTUNE_TUNED_DIR", str(tmp_path))
    a = arrays(rng, 2, 3, 5, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forward_call(a)
    np.testing.assert_allclose(a["out"], a["inp"] @ a["weight"].T + a["bias"], rtol=1e-4, atol=1e-4)


def test_records_of_a_kin_machine_run_where_this_one_has_none_of_its_own(rng, tmp_path, monkeypatch):
    """Another VM of this CPU and target whose feature flags differ: its records count as tuned
    (origin "kin"), with one warning while this machine has none; this machine's own record of a
    size comes first."""
    kin = {**machine.fingerprint(), "features": "0123456789ab", "id": "kin0000001"}
    problem = Problem("forward", 6, 7, 5)
    store.save(*make_record(problem=problem, config=space.Config(3, LANES, 64, 1, 1, "rows-outer", 1),
                            fingerprint=kin), tmp_path)
    monkeypatch.setenv("AUTOTUNE_TUNED_DIR", str(tmp_path))
    a = arrays(rng, 2, 3, 5, 7)
    with pytest.warns(UserWarning, match=r"no record .* made on this machine .*1 records of kin0000001"):
        forward_call(a)
    np.testing.assert_allclose(a["out"], a["inp"] @ a["weight"].T + a["bias"], rtol=1e-4, atol=1e-4)
    choice = load.winners().choice(problem)
    assert (choice.kind, choice.origin, choice.config.mr) == ("kin", f"{load.KIN} kin0000001", 3)
    assert load.winners().choice(Problem("forward", 7, 7, 5)).kind == "near"

    store.save(*make_record(problem=problem, use="blas"), tmp_path)  # this machine's own
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load.Winners(tmp_path).choice(problem) == load.Choice(None, "tuned", baseline="blas")


@pytest.mark.parametrize("baseline", ["blas", "numpy"])
def test_a_size_where_a_baseline_won_runs_it_and_so_do_its_neighbours(rng, tmp_path, monkeypatch, baseline):
    record, source = make_record(use=baseline)  # forward M=10 N=20 K=30
    store.save(record, source, tmp_path)
    monkeypatch.setenv("AUTOTUNE_TUNED_DIR", str(tmp_path))
    for B, T in ((1, 10), (1, 12)):  # the tuned size, and an untuned one next to it
        a = arrays(rng, B, T, 30, 20)
        forward_call(a)
        assert load.winners().functions[Problem("forward", B * T, 20, 30)][0] is getattr(KERNELS["forward"], baseline)
        np.testing.assert_allclose(a["out"], a["inp"] @ a["weight"].T + a["bias"], rtol=1e-5, atol=1e-5)
        forward_call(a, bias=None)  # no bias: the baseline must not add one
        np.testing.assert_allclose(a["out"], a["inp"] @ a["weight"].T, rtol=1e-5, atol=1e-5)


def test_a_record_that_runs_pytorch_runs_blas_with_a_warning_where_it_is_not_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(ops, "torch_or_none", lambda: None)
    store.save(*make_record(use="torch"), tmp_path)  # forward M=10 N=20 K=30
    with pytest.warns(UserWarning, match="1 record.* run PyTorch, which is not installed: BLAS with beta runs"):
        winners = load.Winners(tmp_path)
    assert winners.choice(Problem("forward", 10, 20, 30)) == load.Choice(None, "tuned", baseline="blas")
    assert winners.choice(Problem("forward", 12, 20, 30)).baseline == "blas"  # and its neighbours


def test_an_untuned_size_runs_the_nearest_tuned_choice_or_blas_when_nothing_near_was_tuned(tmp_path, monkeypatch):
    record, source = make_record(config=space.Config(3, 2 * LANES, 64, 2, 1, "rows-outer", 1))
    store.save(record, source, tmp_path)
    monkeypatch.setenv("AUTOTUNE_TUNED_DIR", str(tmp_path))
    near, far = Problem("forward", 12, 20, 30), Problem("forward", 4096, 768, 768)
    assert load.winners().choice(near).config == record.config
    assert load.winners().choice(near).origin == "nearest tuned forward M=10 N=20 K=30"
    assert load.winners().choice(far) == load.Choice(None, load.FAR, baseline="blas")
    assert load.winners().function(far)[0] is KERNELS["forward"].blas


def test_blas_on_numbas_threads_runs_on_every_core_whatever_the_count_was(rng, tmp_path, monkeypatch):
    """Compiled BLAS above blas.SERIAL_FLOPS splits its work over numba's threads: the entry point sets
    their count as the search timed it (every core), not the count the last call left; below it, on
    OpenBLAS's own threads, the count is left alone."""
    monkeypatch.setenv("AUTOTUNE_TUNED_DIR", str(tmp_path))  # nothing tuned: BLAS with beta everywhere
    large, small = (1, 64, 192, 192), (1, 2, 3, 5)
    assert not blas.on_own_threads(KERNELS["forward"].problem(Shape(*large)).flops)
    assert blas.on_own_threads(KERNELS["forward"].problem(Shape(*small)).flops)
    numba.set_num_threads(1)
    try:
        a = arrays(rng, *small)
        forward_call(a)
        assert numba.get_num_threads() == 1
        a = arrays(rng, *large)
        forward_call(a)
        assert numba.get_num_threads() == machine.max_threads()
        np.testing.assert_allclose(f64(a["out"]), f64(a["inp"]) @ f64(a["weight"]).T + a["bias"], rtol=1e-4, atol=1e-4)
    finally:
        numba.set_num_threads(machine.max_threads())


def test_a_backward_on_blas_runs_as_one_compiled_call_on_every_core(rng, tmp_path, monkeypatch):
    """Where both halves run BLAS, the entry point calls the compiled BLAS's whole backward (its
    halves side by side at this size), on every core whatever the count was; where a half runs a
    kernel, the halves in turn."""
    store.save(*_tuned_record(Problem("backward_input", 10, 20, 30), "kernel"), tmp_path)
    monkeypatch.setenv("AUTOTUNE_TUNED_DIR", str(tmp_path))
    B, T, C, OC = 1, 1031, 61, 67  # nothing tuned near: BLAS
    assert blas.runs_side_by_side(B * T, C, OC) and machine.max_threads() > 1
    assert load.winners().backward_function(B * T, C, OC) == (blas.backward, machine.max_threads())
    in_turn, threads = load.winners().backward_function(10, 20, 30)
    assert in_turn is not blas.backward and threads is None
    a = arrays(rng, B, T, C, OC)
    before = {k: f64(a[k]) for k in ("dinp", "dweight", "dbias")}
    numba.set_num_threads(1)
    try:
        tuned.matmul_backward(a["dinp"], a["dweight"], a["dbias"], a["dout"], a["inp"], a["weight"])
        assert numba.get_num_threads() == machine.max_threads()
    finally:
        numba.set_num_threads(machine.max_threads())
    dout, inp = f64(a["dout"]).reshape(-1, OC), f64(a["inp"]).reshape(-1, C)
    np.testing.assert_allclose(a["dinp"], before["dinp"] + (dout @ f64(a["weight"])).reshape(B, T, C),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a["dweight"], before["dweight"] + dout.T @ inp, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(a["dbias"], before["dbias"] + dout.sum(axis=0), rtol=1e-4, atol=1e-3)


def test_beside_a_half_on_openblas_threads_a_parallel_kernel_gives_way(tmp_path, monkeypatch):
    """A parallel kernel gives way to its sibling's formulation where that runs on OpenBLAS's own
    threads (numpy; compiled BLAS under blas.SERIAL_FLOPS), not beside compiled BLAS on numba's
    threads; a serial kernel always stays."""
    # backward_input (B*T, C, OC) won by a formulation; backward_weight (OC, C, B*T) by a kernel
    pairs = [("numpy", (4096, 768, 768)), ("blas", (2048, 768, 768)), ("blas", (10, 20, 30))]
    for use, (BT, C, OC) in pairs:
        store.save(*_tuned_record(Problem("backward_input", BT, C, OC), use), tmp_path)
        store.save(*_tuned_record(Problem("backward_weight", OC, C, BT), "kernel"), tmp_path)
    monkeypatch.setenv("AUTOTUNE_TUNED_DIR", str(tmp_path))
    beside_numpy, beside_blas, serial = (Problem("backward_weight", OC, C, BT) for _, (BT, C, OC) in pairs)
    assert blas.THREADS_SETTABLE and not blas.on_own_threads(beside_blas.flops) and blas.on_own_threads(serial.flops)
    assert space.analytical_config(beside_numpy).threads > 1 and space.analytical_config(serial).threads == 1
    gave_way = load.winners().choice(beside_numpy)
    assert (gave_way.baseline, gave_way.beside) == ("numpy", True)
    for kept in (beside_blas, serial):
        choice = load.winners().choice(kept)
        assert (choice.config, choice.origin, choice.beside) == (space.analytical_config(kept), "tuned", False)


@pytest.mark.parametrize("preset, expected", [(None, "unset"), ("10000", "10000")])
def test_importing_tuned_leaves_the_openmp_spin_to_libgomp_and_the_user(preset, expected):
    """README, "Threads that spin": a shorter spin helped a kernel before BLAS and slowed kernels
    after a pause, so the import sets nothing and a user's setting reaches libgomp as it was."""
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if preset is not None:
        env["GOMP_SPINCOUNT"] = preset
    code = "import os, tuned; print(os.environ.get('GOMP_SPINCOUNT', 'unset'))"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == expected
