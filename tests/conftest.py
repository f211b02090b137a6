"""Every test run builds kernels and stores winners in temporary folders, never in the repo's tuned/."""
import os
import tempfile

_session = tempfile.mkdtemp(prefix="autotune-tests-")
os.environ["AUTOTUNE_CACHE_DIR"] = os.path.join(_session, "cache")
os.environ["AUTOTUNE_TUNED_DIR"] = os.path.join(_session, "tuned")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from autotune import build, machine, render, space, store  # noqa: E402
from autotune.ops import KERNELS  # noqa: E402

# A sample of the space: each register block size, both loop orders, K blocks small enough to
# split every test size, tasks of one tile and of many, operands packed and read in place.
SAMPLE_CONFIGS = [
    space.Config(mr=4, nr=16, kc=64, row_tiles=1, col_panels=1, order="rows-outer", threads=1),
    space.Config(mr=8, nr=32, kc=256, row_tiles=4, col_panels=8, order="panels-outer", threads=2),
    space.Config(mr=12, nr=32, kc=128, row_tiles=2, col_panels=2, order="rows-outer", threads=2),
    space.Config(mr=6, nr=16, kc=64, row_tiles=1, col_panels=4, order="panels-outer", threads=2),
    space.Config(mr=16, nr=16, kc=512, row_tiles=32, col_panels=16, order="rows-outer", threads=1),
    space.Config(mr=4, nr=16, kc=64, row_tiles=1, col_panels=1, order="rows-outer", threads=1, pack=False),
    space.Config(mr=12, nr=32, kc=128, row_tiles=2, col_panels=2, order="panels-outer", threads=2, pack=False),
]
# Every (kernel, config) of the sample that the kernel's template offers (the forward always packs).
SAMPLE_CASES = [(name, config) for name in sorted(KERNELS) for config in SAMPLE_CONFIGS
                if config.pack in KERNELS[name].pack_options]


def kernel_function(kernel, config):
    return getattr(build.build(render.render(kernel, config), render.COMPILE_FLAGS).module, kernel.entry)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def make_record(median_s=1.0, **changes):
    config = space.default_config()
    source = render.render(KERNELS["forward"], config)
    record = {
        "kernel": "forward", "M": 10, "N": 20, "K": 30, "shape": "B=1,T=10,C=30,OC=20",
        "config": config.params(), "config_label": config.label(),
        "median_s": median_s, "spread_s": [median_s, median_s], "repeats": 3, "gflops": 1.0,
        "baselines": {"numpy_ratio": 1.0, "numpy_gflops": 1.0, "sgemm_ratio": 1.0, "naive_gflops": 1.0,
                      "blas": {"library": "openblas", "architecture": "X", "OPENBLAS_CORETYPE": None}},
        "trials": {"complete": 1, "failed": 0, "rejected": 0}, "date": "today",
        "fingerprint": machine.fingerprint(), "template_hash": render.template_hash(KERNELS["forward"]),
        "compile_flags": render.COMPILE_FLAGS, "source_sha256": store.source_digest(source),
    }
    record.update(changes)
    return record, source
