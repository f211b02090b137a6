"""Kernels timed alone under libgomp's spin settings: does a shorter spin after a parallel region
cost a kernel called back to back?

    python docs/spin_count.py [PAIRS]     # default 4

libgomp reads GOMP_SPINCOUNT and OMP_WAIT_POLICY once, when numba starts its threads, so each
setting runs in its own child process; the settings' processes alternate, PAIRS times. A child
times the forward's analytical config (2 threads) at 4,64,48,48, 8,128,192,192 and 16,1024,48,48
in bursts (measure.compare, 15 rounds, medians). Prints, per shape and setting, the ratio of
libgomp's default (GOMP_SPINCOUNT=300000) to it over each pair: above 1, the setting ran faster.
Run on an idle machine; the ratios of separate processes carry the machine's drift between them.
"""
import dataclasses
import json
import os
import statistics
import subprocess
import sys

SHAPES = ("4,64,48,48", "8,128,192,192", "16,1024,48,48")
SETTINGS = {"GOMP_SPINCOUNT=300000 (libgomp's default)": {"GOMP_SPINCOUNT": "300000"},
            "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
            # no spinning: libgomp spins GOMP_SPINCOUNT turns anyway where it is set
            "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"}}


def child():
    """Seconds per call of each shape's kernel, as JSON on stdout."""
    os.environ.pop("OPENBLAS_CORETYPE", None)
    from autotune import build, measure, space
    from autotune.ops import KERNELS, Shape
    kernel, seconds = KERNELS["forward"], {}
    for text in SHAPES:
        problem = kernel.problem(Shape.parse(text))
        function = build.build_kernel(kernel, dataclasses.replace(space.analytical_config(problem), threads=2)).function(kernel)
        arrays = kernel.inputs(problem)
        with measure.thread_count(2):
            seconds[text] = measure.compare({"kernel": lambda f=function, a=arrays: kernel.call(f, a)}, rounds=15, seed=0)["kernel"].median
    print(json.dumps(seconds))


def main(pairs=4):
    runs = {name: [] for name in SETTINGS}
    for _ in range(int(pairs)):
        for name, env in SETTINGS.items():
            out = subprocess.run([sys.executable, __file__, "--child"], env={**os.environ, **env},
                                 capture_output=True, text=True, check=True).stdout
            runs[name].append(json.loads(out.splitlines()[-1]))
    default = next(iter(SETTINGS))
    print(f"forward kernels alone, 2 threads, {pairs} alternating process pairs; default / setting, per pair:")
    for text in SHAPES:
        for name in list(SETTINGS)[1:]:
            ratios = [d[text] / s[text] for d, s in zip(runs[default], runs[name])]
            print(f"  {text:15s} {name:36s} median {statistics.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x")


if __name__ == "__main__":
    child() if sys.argv[1:] == ["--child"] else main(*sys.argv[1:])
