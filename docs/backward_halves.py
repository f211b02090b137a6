"""Why two backward kernels that each beat BLAS alone can tie with it as a whole backward.

    python docs/backward_halves.py [B,T,C,OC]      # default 4,1024,768,768

With this machine's stored records of both halves at the shape (their stored sources, whatever
each record's `use`), times in one process, interleaved, 9 rounds: each half's kernel and its BLAS
with beta alone, and both halves one after the other as kernels and as BLAS (the search's whole
backward). Twice: first with a pause after BLAS only (as a search's final comparison times a half),
then with a pause after every contender (as the whole backward and `bench` are timed). Prints
medians and paired ratios. Run with OPENBLAS_CORETYPE unset and nothing else running.
"""
import sys

from record_vs_blas import stored_entry  # docs/, this script's folder

from autotune import machine, measure, ops, search


def half_calls(name, shape):
    problem = ops.KERNELS[name].problem(shape)
    return search.stored_calls(stored_entry(problem), ("blas",))


def main(shape_text="4,1024,768,768"):
    shape = ops.Shape.parse(shape_text)
    dinp, dweight = (half_calls(name, shape) for name in ops.OPS["backward"])
    contenders = {"dinp kernel": dinp["kernel"], "dinp blas": dinp["blas"],
                  "dweight kernel": dweight["kernel"], "dweight blas": dweight["blas"],
                  "both kernels": lambda: (dinp["kernel"](), dweight["kernel"]()),
                  "both blas": lambda: (dinp["blas"](), dweight["blas"]())}
    pauses = {"pause after BLAS only": ("dinp blas", "dweight blas", "both blas"),
              "pause after every contender": tuple(contenders)}
    for label, settle_after in pauses.items():
        with measure.thread_count(machine.max_threads()):
            t = measure.compare(contenders, rounds=9, settle_after=settle_after, seed=0)
        print(f"{label}: ms a call " + ", ".join(f"{name} {t[name].median * 1e3:.2f}" for name in contenders))
        for what in ("dinp", "dweight", "both"):
            kernel, blas = (f"{what} kernel", f"{what} blas") if what != "both" else ("both kernels", "both blas")
            print(f"  {what}: kernel vs BLAS {measure.speedup(t[kernel], t[blas]).describe()}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
