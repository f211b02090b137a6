"""B's row in the k loop, both ways: `b_panel[b_k + k]` indexed, and the panel sliced at its K block
once per tile and read as `b_panel[k]` (the template choice `slice_b`; docs/where-the-time-goes.md).

    python docs/slice_b.py [KERNEL] [M x N x K]     # default: forward 4096x768x768

Takes this machine's record for the size, whatever it runs (a record that runs BLAS keeps the best
kernel config its search found), builds its config both ways on 1 and on 2 threads, verifies each,
and times them against each other and the compiled BLAS call on as many threads (measure.compare,
9 interleaved rounds in random order, a pause after each) at the record's size and at
384 x 384 x 256. Run on an idle machine; OPENBLAS_CORETYPE is unset here.
"""
import dataclasses
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

# docs/record_vs_blas.py, beside this script
from record_vs_blas import stored_record, timed_beside_blas

from autotune import bench, build, measure, verify
from autotune.ops import KERNELS, Problem

WAYS = {"b_k + k": False, "sliced": True}


def built_both_ways(kernel, config):
    """{way: function}, each checked against the float64 reference at a size that divides nothing."""
    functions = {}
    for way, sliced in WAYS.items():
        function = build.build_kernel(kernel, dataclasses.replace(config, slice_b=sliced)).function(kernel)
        failure = verify.Reference(kernel, Problem(kernel.name, 37, 83, 300)).check(function)
        if failure is not None:
            raise SystemExit(f"{way}: {failure}")
        functions[way] = function
    return functions


def main(name="forward", size="4096x768x768"):
    kernel = KERNELS[name]
    record, (M, N, K) = stored_record(name, size)
    config = dataclasses.replace(record.config, slice_b=False)
    print(f"{name} {size}: record config {config.label()} (runs {record.use}); 9 interleaved rounds")
    for threads in (1, 2):
        functions = built_both_ways(kernel, dataclasses.replace(config, threads=threads))
        peak = bench.fma_peak(threads)
        for m, n, k in [(M, N, K), (min(M, 384), min(N, 384), min(K, 256))]:
            t, gf = timed_beside_blas(kernel, (m, n, k), functions, threads, rounds=9)
            print(f"  {threads} thread(s) {m}x{n}x{k}: "
                  + ", ".join(f"{c} {g:.1f} GF/s ({100 * g / peak:.0f}%)" for c, g in gf.items())
                  + f"; sliced vs b_k + k {measure.speedup(t['sliced'], t['b_k + k']).describe()}"
                  + f"; sliced vs BLAS {measure.speedup(t['sliced'], t['blas']).describe()}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
