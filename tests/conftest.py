"""Every test run builds kernels and stores winners in temporary folders, never in the repo's tuned/."""
import atexit
import os
import shutil
import tempfile

_session = tempfile.mkdtemp(prefix="autotune-tests-")
atexit.register(shutil.rmtree, _session, ignore_errors=True)  # its numba cache is about 24 MB a run
os.environ["AUTOTUNE_CACHE_DIR"] = os.path.join(_session, "cache")
os.environ["AUTOTUNE_TUNED_DIR"] = os.path.join(_session, "tuned")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from autotune import build, machine, measure, render, search, space, store  # noqa: E402
from autotune.ops import KERNELS, Problem  # noqa: E402

LANES = machine.target().lanes


def config(mr, vectors, kc, row_tiles, col_panels, order, threads, pack_a=True, split_k=False, pack_b=True,
           bias_slice=False, slice_b=False, sums_in_registers=False, pack_blocks=False):
    """A Config whose NR is `vectors` of this target's vectors: the same sample on AVX2 and AVX-512."""
    return space.Config(mr, vectors * LANES, kc, row_tiles, col_panels, order, threads, pack_a, split_k, pack_b,
                        bias_slice, slice_b, sums_in_registers, pack_blocks)


# A sample of the space that is valid on every target (at most 15 vector registers): register
# blocks of one to four vectors, both loop orders, K blocks small enough to split every test size,
# tasks of one tile and of many, A packed and read in place, one thread and two.
SAMPLE_CONFIGS = [
    config(4, 1, 64, 1, 1, "rows-outer", 1),
    config(6, 2, 128, 2, 3, "panels-outer", 2),
    config(3, 3, 64, 4, 2, "rows-outer", 2, pack_a=False),
    config(2, 4, 64, 1, 8, "panels-outer", 1, pack_a=False),
    config(12, 1, 256, 2, 2, "rows-outer", 2, pack_a=False),
]
# backward_weight's threads may split K instead of the tasks: with A packed and in place, K blocks
# of 64 so that a worker takes several of a test size's blocks, and some none.
SPLIT_K_CONFIGS = [
    config(6, 2, 64, 2, 1, "panels-outer", 2, split_k=True),
    config(4, 1, 64, 1, 2, "rows-outer", 2, pack_a=False, split_k=True),
]
# backward_weight reads inp in place where its rows are whole panel rows (NR divides N): split K
# and split tasks, A packed and in place; tested at N = NR and at N = 3 NR.
B_IN_PLACE_CONFIGS = [
    config(4, 2, 64, 2, 1, "rows-outer", 2, pack_a=False, split_k=True, pack_b=False),
    config(3, 2, 128, 1, 1, "panels-outer", 2, pack_b=False),
    config(5, 2, 64, 2, 1, "rows-outer", 1, pack_a=False, pack_b=False),
    config(3, 2, 64, 1, 1, "panels-outer", 2, pack_a=False, split_k=True, pack_b=False, slice_b=True),
]
# The forward's tiles may start from a slice of the bias: A packed and in place, one thread and two.
BIAS_SLICE_CONFIGS = [
    config(6, 2, 64, 2, 1, "rows-outer", 2, pack_a=False, bias_slice=True),
    config(3, 3, 128, 1, 2, "panels-outer", 1, bias_slice=True),
]
# B's panel sliced at its K block once per tile, in every kernel (K blocks of 64, so b_k is not 0
# past the first); B read in place and sliced is the last of B_IN_PLACE_CONFIGS.
SLICE_B_CASES = [
    ("forward", config(6, 2, 64, 2, 1, "panels-outer", 2, slice_b=True, bias_slice=True)),
    ("backward_input", config(5, 1, 64, 1, 2, "rows-outer", 1, pack_a=False, slice_b=True)),
    ("backward_weight", config(4, 2, 64, 2, 1, "rows-outer", 2, split_k=True, slice_b=True)),
]
# The weight gradient's dbias sums held in registers down each K block: split K and split tasks,
# task rows (MC) that NR divides and that it does not (the last columns of dbias then add per row).
SUMS_IN_REGISTERS_CONFIGS = [
    config(4, 2, 64, 2, 1, "rows-outer", 2, split_k=True, slice_b=True, sums_in_registers=True),
    config(3, 1, 64, 3, 2, "panels-outer", 2, pack_a=False, sums_in_registers=True),
    config(5, 1, 128, 2, 1, "rows-outer", 1, sums_in_registers=True),
]
# The forward's weight (and A, where packed) transposed into panels 8 x 8 at a time: MR a multiple
# of 8 and not, one K block and several, whole panels and the last one past N (the test sizes).
PACK_BLOCKS_CONFIGS = [
    config(8, 1, 64, 2, 1, "rows-outer", 2, pack_blocks=True),
    config(3, 1, 256, 1, 2, "panels-outer", 1, pack_a=False, bias_slice=True, pack_blocks=True),
]
SAMPLE_CASES = ([(name, c) for name in sorted(KERNELS) for c in SAMPLE_CONFIGS]
                + [("backward_weight", c) for c in SPLIT_K_CONFIGS] + [("forward", c) for c in BIAS_SLICE_CONFIGS]
                + SLICE_B_CASES + [("backward_weight", c) for c in SUMS_IN_REGISTERS_CONFIGS]
                + [("forward", c) for c in PACK_BLOCKS_CONFIGS])


def kernel_function(kernel, config):
    return build.build_kernel(kernel, config).function(kernel)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def make_record(seconds=1.0, vs_blas=1.1, problem=None, config=None, older_template=False, **changes):
    """(Record, source) as a search would store them: by default the forward at M=10 N=20 K=30 with
    the analytical config; the source is rendered for the problem's kernel and the config (as an
    older template rendered it, different from today's, if `older_template`)."""
    problem = problem or Problem("forward", 10, 20, 30)
    config = config or space.analytical_config(problem)
    kernel = KERNELS[problem.kernel]
    source = render.render(kernel, config) + ("OLDER_TEMPLATE = True  # code an older template rendered\n"
                                              if older_template else "")
    fields = dict(
        problem=problem, shape="B=1,T=10,C=30,OC=20", config=config, use="kernel", seconds=seconds,
        spread=(seconds, seconds), rounds=7, baselines={"numpy": 1.0, "blas": 1.0},
        vs_blas=(vs_blas, vs_blas * 0.99, vs_blas * 1.01), decision="a test", finalists=((config, seconds),),
        blas=measure.blas_info(), trials={"complete": 1, "failed": 0, "rejected": 0, "study": "s", "failures": []},
        compile_s=1.0, search_s=1.0, template=kernel.template,
        template_hash=render.template_hash(kernel), source_sha256=store.source_digest(source),
        compile_flags=render.COMPILE_FLAGS, fingerprint=machine.fingerprint(), versions={}, date="today")
    fields.update(changes)
    return store.Record(**fields), source


@pytest.fixture(autouse=True)
def short_final_comparisons(monkeypatch):
    """A search's final comparison at the tiny test sizes: the minimum rounds, not a time budget."""
    monkeypatch.setattr(search, "FINAL_BUDGET_S", 0.0)


@pytest.fixture
def steady_anchor(monkeypatch):
    """A trial whose anchor ran slower than usual is not scored (test_search tests that). In a
    parallel test run the other process slows the anchor now and then, and a test whose one good
    candidate must be scored failed that way (1 run in 3 under load, 2026-11-30)."""
    monkeypatch.setattr(search, "DISTURBED_SLOWDOWN", float("inf"))
