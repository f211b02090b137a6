"""Which OpenMP runtime numba's kernels run on, and its spin setting: does either change how the
stored kernels compare with BLAS, alone and in a training step?

    python docs/openmp_runtime.py [SHAPE] [PAIRS]     # default 16,1024,48,48, 2 pairs

numba's "omp" threading layer binds libgomp's symbols at its first parallel call to the first
libgomp in the process: the system's, or PyTorch's bundled copy when torch was imported before
(LD_DEBUG=bindings shows GOMP_parallel bound to torch/lib/libgomp.so.1 then). `bench` imports torch
to time it; `search` does not. So each setting runs in its own child process, the settings
alternating PAIRS times: the system's libgomp or torch's, with GOMP_SPINCOUNT 10000 or 300000
(libgomp's default). A child takes this machine's records of the three kernels at SHAPE (run it
on a tuned checkout) and times, interleaved (measure.compare, 7 rounds, a pause after each), the
step (forward, then both backward halves) with every kernel on its stored kernel, with every
kernel on BLAS, and with the forward's kernel before a BLAS backward, and each kernel alone
against its BLAS call. Prints the paired median ratios (above 1, the kernels ran faster). Run on an
idle machine; OPENBLAS_CORETYPE is unset in the children.
"""
import json
import os
import subprocess
import sys

SETTINGS = {"system libgomp, spin 10000": {"GOMP_SPINCOUNT": "10000"},
            "system libgomp, spin 300000": {"GOMP_SPINCOUNT": "300000"},
            "torch's libgomp, spin 10000": {"GOMP_SPINCOUNT": "10000", "RUNTIME": "torch"},
            "torch's libgomp, spin 300000": {"GOMP_SPINCOUNT": "300000", "RUNTIME": "torch"}}
NAMES = ("forward", "dinp", "dweight")


def child(shape_text):
    """The paired median ratios of one setting, as JSON on stdout."""
    os.environ.pop("OPENBLAS_CORETYPE", None)
    from autotune import measure, ops, search, store
    if os.environ.get("RUNTIME") == "torch":
        import torch  # noqa: F401  (before numba's first parallel call: its libgomp is then the one bound)
    shape = ops.Shape.parse(shape_text)
    stored = search._usable_records(store.tuned_dir())
    entries = [stored.get(ops.KERNELS[name].problem(shape)) for name in ops.OPS["all"]]
    if None in entries:
        sys.exit(f"no records of all three kernels at {shape_text} on this machine: search it first")
    runs = [search.stored_calls(entry, {"blas"}) for entry in entries]
    step = lambda plan: lambda: [runs[i][use]() for i, use in enumerate(plan)]
    contenders = {"step: kernels": step(("kernel",) * 3), "step: BLAS": step(("blas",) * 3),
                  "step: forward kernel, BLAS backward": step(("kernel", "blas", "blas"))}
    for name, run in zip(NAMES, runs):
        contenders.update({f"{name}: kernel": run["kernel"], f"{name}: BLAS": run["blas"]})
    with measure.thread_count(2):
        t = measure.compare(contenders, rounds=7, settle_after=tuple(contenders), seed=0)
    ratio = lambda a, b: measure.speedup(t[a], t[b]).median
    result = {"step, kernels / BLAS": ratio("step: kernels", "step: BLAS"),
              "step, forward kernel + BLAS / BLAS": ratio("step: forward kernel, BLAS backward", "step: BLAS")}
    result.update({f"{name} alone, kernel / BLAS": ratio(f"{name}: kernel", f"{name}: BLAS") for name in NAMES})
    with open("/proc/self/maps") as maps:
        result["torch's libgomp mapped"] = any("torch/lib/libgomp" in line for line in maps)
    print(json.dumps(result))


def main(shape_text="16,1024,48,48", pairs="2"):
    readings = {name: [] for name in SETTINGS}
    for _ in range(int(pairs)):
        for name, settings in SETTINGS.items():
            env = {**{k: v for k, v in os.environ.items() if k != "RUNTIME"}, **settings}
            done = subprocess.run([sys.executable, __file__, "--child", shape_text], env=env, capture_output=True,
                                  text=True, check=True)
            readings[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  {name}: done", flush=True)
    print(f"{shape_text}, 2 threads, stored records; paired median ratios, one per run (above 1: kernels faster)")
    for name, runs in readings.items():
        print(f"{name}:")
        for key in runs[0]:
            values = [run[key] for run in runs]
            shown = ", ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in values)
            print(f"  {key}: {shown}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        main(*sys.argv[1:])
