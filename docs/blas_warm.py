"""OpenBLAS runs a small product faster once it has made a large one (measure.warm_blas).

    python docs/blas_warm.py [B,T,C,OC]      # default 8,128,192,192, forward

In one fresh process: the forward at this shape through BLAS with beta (scipy's sgemm, the library
the loaders' compiled BLAS calls), numpy on 2-D views and the generated kernel of this size's stored
record (its stored source, whatever the record's `use`), interleaved, 9 rounds; then measure.warm_blas (three large sgemm
calls through each library), and the same timing twice more. Prints medians and the kernel's
paired ratios. Run with OPENBLAS_CORETYPE unset and nothing else running.
"""
import sys

from record_vs_blas import stored_entry  # docs/, this script's folder

from autotune import machine, measure, ops, search

measure._blas_warmed = True  # time the libraries as a fresh process finds them first


def main(shape_text="8,128,192,192"):
    kernel = ops.KERNELS["forward"]
    problem = kernel.problem(ops.Shape.parse(shape_text))
    calls = search.stored_calls(stored_entry(problem), ("scipy_blas", "numpy"))
    for label in ("fresh process", "after warm_blas", "after warm_blas, again"):
        if label == "after warm_blas":
            measure._blas_warmed = False
            measure.warm_blas()
        with measure.thread_count(machine.max_threads()):
            timings = measure.compare(calls, rounds=9, settle_after=tuple(calls), seed=0)
        medians = ", ".join(f"{name} {t.median * 1e3:.3f}" for name, t in timings.items())
        versus = measure.speedup(timings["kernel"], timings["scipy_blas"]).describe()
        print(f"{label:24s} ms a call: {medians}; kernel vs scipy_blas {versus}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
