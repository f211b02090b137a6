"""Why autotune/build.py compiles every module in a child process: a kernel compiled in the process
that runs it and the same kernel loaded from numba's cache can run different machine code.

    python docs/compiled_here.py [KERNEL] [B,T,C,OC] [MRxNR]     # default forward 4,1024,768,768 8x48

For a config of the shipped templates (tasks of 2 x 16 register blocks, KC = 768, A in place, 2
threads), three rounds of two fresh processes, with an empty numba cache each round: the first
compiles the kernel itself (what the search's child did before, and what a user's first process
did), the second loads it from the cache the first wrote (what every later process does). Each
prints its best of 5 bursts in GF/s; the processes cannot be interleaved, so the three rounds
alternate them. Then the vector FMAs of the helper compiled on its own against the entry
function's cached object, which holds the helper compiled a second time inside it (x86: an FMA
line counted by the register width it names; xmm is four floats or one).
"""
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = """
import json, re, sys, time
from pathlib import Path
from autotune import build, render, space
from autotune.ops import KERNELS, Shape
kernel_name, shape, mr, nr, path = sys.argv[1:]
kernel = KERNELS[kernel_name]
config = space.Config(int(mr), int(nr), 768, 2, 16, "rows-outer", 2, pack_a=False)
path = Path(path)
if not path.exists():
    path.write_text(render.render(kernel, config))
with build._numba_settings(render.COMPILE_FLAGS):
    module = build._import("compiled_here_kernel", path)
fn = getattr(module, kernel.entry)
problem = kernel.problem(Shape.parse(shape))
arrays = kernel.inputs(problem)
kernel.call(fn, arrays)
best = 0.0
for _ in range(5):
    start = time.perf_counter()
    for _ in range(3):
        kernel.call(fn, arrays)
    best = max(best, 3 * problem.flops / (time.perf_counter() - start) / 1e9)
helper = module.multiply_block
fmas = {}
if helper.signatures:  # compiled here: its own machine code can be read
    lines = re.findall(r"vfmadd\\S*\\s+[^\\n]*", helper.inspect_asm(helper.signatures[0]))
    fmas = {kind: sum(kind in line for line in lines) for kind in ("xmm", "ymm", "zmm")}
print(json.dumps({"compiled here": build._compiled_any(module), "gflops": round(best, 1), "helper fmas": fmas}))
"""


def cached_listing(cache_dir, pattern):
    """objdump -d of the one numba cache data file under cache_dir matching `pattern` (numba
    keeps an index beside it; the object code starts at its ELF header)."""
    [data_file] = Path(cache_dir).rglob(pattern)
    data = data_file.read_bytes()
    with tempfile.NamedTemporaryFile(suffix=".o") as obj:
        obj.write(data[data.index(b"\x7fELF"):])
        obj.flush()
        return subprocess.run(["objdump", "-d", "--no-show-raw-insn", obj.name], capture_output=True, text=True,
                              check=True).stdout


def vector_fmas_in_cached_entry(cache_dir, entry):
    """FMA instructions by register width in the entry function's cached object (objdump)."""
    lines = re.findall(r"vfmadd\S*\s+[^\n]*", cached_listing(cache_dir, f"*.{entry}-*.nbc"))
    return {kind: sum(kind in line for line in lines) for kind in ("xmm", "ymm", "zmm")}


def main(kernel="forward", shape="4,1024,768,768", block="8x48"):
    mr, nr = block.split("x")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    print(f"{kernel} at {shape}, a {block} block, 2 threads; GF/s best of 5 bursts of 3 calls")
    for round_ in range(3):
        with tempfile.TemporaryDirectory() as cache:
            path = str(Path(cache) / "compiled_here_kernel.py")
            for _ in ("compiles", "loads"):
                out = subprocess.run([sys.executable, "-c", RUN, kernel, shape, mr, nr, path], env=env,
                                     capture_output=True, text=True, check=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                where = "compiled in this process" if result["compiled here"] else "loaded from numba's cache"
                print(f"  round {round_ + 1}: {where:26s} {result['gflops']:6.1f} GF/s"
                      + (f"; vector FMAs of multiply_block compiled on its own: {result['helper fmas']}"
                         if result["helper fmas"] else ""))
            if round_ == 0:
                from autotune.ops import KERNELS
                fmas = vector_fmas_in_cached_entry(cache, KERNELS[kernel].entry)
                print(f"  vector FMAs in the cached {KERNELS[kernel].entry} (helpers inlined): {fmas}")


if __name__ == "__main__":
    main(*sys.argv[1:])
