"""The entry points inside @njit code: right answers at tuned and untuned shapes (bias and dbias
present and absent), dispatch built from the winners at import, clear errors for bad input."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from autotune import load, load_njit, store
from autotune.ops import Problem
from conftest import make_record
from tuned.njit import matmul_backward, matmul_forward


@njit
def forward_then_backward(out, inp, weight, bias, dinp, dweight, dbias, dout):
    matmul_forward(out, inp, weight, bias)
    matmul_backward(dinp, dweight, dbias, dout, inp, weight)


@njit
def without_bias(out, inp, weight, dinp, dweight, dout):
    matmul_forward(out, inp, weight, None)
    matmul_backward(dinp, dweight, None, dout, inp, weight)


def arrays(B, T, C, OC, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *shape: rng.standard_normal(shape, dtype=np.float32)
    return dict(out=f(B, T, OC), inp=f(B, T, C), weight=f(OC, C), bias=f(OC), dinp=f(B, T, C), dweight=f(OC, C),
                dbias=f(OC), dout=f(B, T, OC))


def expected(a, bias=True):
    f64 = {k: v.astype(np.float64) for k, v in a.items()}
    B, T, C = a["inp"].shape
    dout, inp = f64["dout"].reshape(B * T, -1), f64["inp"].reshape(B * T, C)
    return {"out": f64["inp"] @ f64["weight"].T + (f64["bias"] if bias else 0),
            "dinp": f64["dinp"] + (dout @ f64["weight"]).reshape(B, T, C),
            "dweight": f64["dweight"] + dout.T @ inp, "dbias": f64["dbias"] + (dout.sum(axis=0) if bias else 0)}


@pytest.mark.parametrize("B, T, C, OC", [(1, 1, 1, 1), (2, 3, 5, 7), (3, 11, 67, 101), (4, 64, 48, 48)])
def test_njit_entry_points_match_float64(B, T, C, OC):
    for bias in (True, False):
        a = arrays(B, T, C, OC)
        want = expected(a, bias)
        if bias:
            forward_then_backward(a["out"], a["inp"], a["weight"], a["bias"], a["dinp"], a["dweight"], a["dbias"],
                                  a["dout"])
        else:
            without_bias(a["out"], a["inp"], a["weight"], a["dinp"], a["dweight"], a["dout"])
        for name, value in want.items():
            np.testing.assert_allclose(a[name], value, rtol=1e-4, atol=1e-4, err_msg=f"{name}, bias={bias}")


def test_bad_input_inside_njit_raises_a_clear_error():
    a = arrays(2, 3, 5, 7)
    with pytest.raises(ValueError, match="weight must be \\(OC, C\\) with C = inp.shape\\[2\\]"):
        forward_then_backward(a["out"], a["inp"], np.zeros((7, 4), np.float32), a["bias"], a["dinp"], a["dweight"],
                              a["dbias"], a["dout"])
    with pytest.raises(ValueError, match="dbias must be \\(OC,\\)"):
        forward_then_backward(a["out"], a["inp"], a["weight"], a["bias"], a["dinp"], a["dweight"],
                              np.zeros(3, np.float32), a["dout"])
    square = np.zeros((5, 5), np.float32)  # OC = C: out may be passed inp itself
    with pytest.raises(ValueError, match="out overlaps an input"):
        without_bias(a["inp"], a["inp"], square, a["dinp"], square.copy(), np.zeros((2, 3, 5), np.float32))
    with pytest.raises(TypingError, match="inp must be a C-contiguous float32 array \\(B, T, C\\), got array\\(float64"):
        without_bias(a["out"], a["inp"].astype(np.float64), a["weight"], a["dinp"], a["dweight"], a["dout"])
    with pytest.raises(TypingError, match="dinp must be a writable C-contiguous float32 array"):
        without_bias(a["out"], a["inp"], a["weight"], np.asfortranarray(a["dinp"]), a["dweight"], a["dout"])


def test_the_dispatch_names_every_kernel_winner_and_runs_blas_elsewhere(tmp_path):
    tuned_record, tuned_source = make_record()  # forward 10 x 20 x 30, the kernel
    blas_record, blas_source = make_record(problem=Problem("forward", 40, 20, 30), use="blas")
    store.save(tuned_record, tuned_source, tmp_path)
    store.save(blas_record, blas_source, tmp_path)
    source = load_njit.dispatch_source(load.Winners(tmp_path))
    assert "if M == 10 and N == 20 and K == 30:\n        FORWARD_10x20x30(out, inp, weight, bias)" in source
    assert "M == 40" not in source  # BLAS won there: it runs what every size nobody tuned runs
    assert "    else:\n        blas.forward(out, inp, weight, bias)" in source
    assert '"""backward_input: no kernel won a size of it on this machine."""\n    blas.backward_input(' in source
    assert "    if ((M" not in source  # no half of a backward runs a kernel: every backward is BLAS's whole one
    assert source.endswith("\n    blas.backward(dinp, dweight, dbias, dout, inp, weight)\n")
    compile(source, "dispatch", "exec")


def test_a_backward_with_a_kernel_half_runs_its_halves_in_turn(tmp_path):
    """The dispatch's whole backward runs the halves one after the other at a size where a kernel won
    either half (named by B*T, C, OC), and the compiled BLAS's backward elsewhere."""
    for problem in (Problem("backward_input", 11, 20, 30), Problem("backward_weight", 30, 20, 13)):
        store.save(*make_record(problem=problem), tmp_path)
    source = load_njit.dispatch_source(load.Winners(tmp_path))
    assert ("    if ((M == 11 and C == 20 and OC == 30)\n"
            "            or (M == 13 and C == 20 and OC == 30)):\n"
            "        backward_input(dinp, dout, weight)\n"
            "        backward_weight(dweight, dbias, dout, inp)\n"
            "        return\n"
            "    blas.backward(dinp, dweight, dbias, dout, inp, weight)\n") in source
    compile(source, "dispatch", "exec")


IN_A_NEW_PROCESS = textwrap.dedent("""
    import json
    import numpy as np
    from numba import njit
    from tuned.njit import matmul_forward
    from autotune import load_njit

    @njit
    def forward(out, inp, weight, bias):
        matmul_forward(out, inp, weight, bias)

    errors = {}
    for T in (10, 40, 13):  # the tuned size, the size BLAS won, an untuned size
        rng = np.random.default_rng(T)
        inp = rng.standard_normal((1, T, 30), dtype=np.float32)
        weight = rng.standard_normal((20, 30), dtype=np.float32)
        bias = rng.standard_normal(20, dtype=np.float32)
        out = np.empty((1, T, 20), np.float32)
        forward(out, inp, weight, bias)
        errors[T] = float(np.abs(out - (inp.astype(np.float64) @ weight.T + bias)).max())
    print(json.dumps({"errors": errors, "tuned": "FORWARD_10x20x30 = stored_kernel" in
                      load_njit.dispatch_source(load_njit.load.winners())}))
""")


def test_a_new_import_picks_up_the_stored_winners(tmp_path):
    for record, source in (make_record(), make_record(problem=Problem("forward", 40, 20, 30), use="blas")):
        store.save(record, source, tmp_path)
    env = {**os.environ, "AUTOTUNE_TUNED_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", IN_A_NEW_PROCESS], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["tuned"] and max(answer["errors"].values()) < 1e-3, answer
