"""The weight gradient with inp packed and read in place (`pack_b`), where NR divides C.

    python docs/b_in_place.py [B,T,C,OC]      # default 4,1024,48,48; e.g. 8,128,192,192

An AVX-512 target is assumed (NR = 16 or 48 floats, one or three zmm vectors). At C = 48 (one
panel) the configs are 6 x 48 blocks, A read in place, the threads splitting K, in K blocks of
1024 and 2048; elsewhere a 16 x 16 and an 8 x 48 block, A read in place, the threads splitting
the tasks. Each is verified, then timed with BLAS with beta (compiled, what the loaders run) and,
when it is installed, PyTorch's dweight (`addmm_` and a sum for dbias): measure.compare, 11
interleaved rounds in random order, a pause after each contender, on every core.
OPENBLAS_CORETYPE is unset here.
"""
import os
import sys
from dataclasses import replace

os.environ.pop("OPENBLAS_CORETYPE", None)

from autotune import bench, build, machine, measure, ops, space, verify
from autotune.ops import KERNELS, Shape

KERNEL = KERNELS["backward_weight"]


def configs(problem):
    """{label: Config}: each block both ways, packed and inp read in place."""
    if problem.N == 48:
        blocks = {f"6x48 split K, kc {kc}": space.Config(6, 48, kc, 8, 1, "rows-outer", 2, pack_a=False, split_k=True)
                  for kc in (1024, 2048)}
    else:
        blocks = {"16x16, kc 768": space.Config(16, 16, 768, 2, 4, "rows-outer", 2, pack_a=False),
                  "8x48, kc 1024": space.Config(8, 48, 1024, 4, 4, "rows-outer", 2, pack_a=False)}
    return {f"{way}, {label}": replace(config, pack_b=way == "packed")
            for label, config in blocks.items() for way in ("packed", "in place")}


def torch_dweight(torch, arrays):
    t = {name: torch.from_numpy(arrays[name]) for name in ("dweight", "dbias", "dout", "inp")}

    def call():
        t["dweight"].addmm_(t["dout"].t(), t["inp"])
        t["dbias"].add_(t["dout"].sum(0))
    return call


def main(shape_text="4,1024,48,48"):
    problem = KERNEL.problem(Shape.parse(shape_text))
    arrays = KERNEL.inputs(problem)
    threads = machine.max_threads()
    contenders = {}
    for name, config in configs(problem).items():
        reason = space.invalid_reason(config, problem)
        if reason:
            raise SystemExit(f"{name}: {reason}")
        function = build.build_kernel(KERNEL, config).function(KERNEL)
        failure = verify.Reference(KERNEL, problem).check(function)
        if failure is not None:
            raise SystemExit(f"{name}: {failure}")
        contenders[name] = lambda function=function: KERNEL.call(function, arrays)
    contenders["blas"] = lambda: KERNEL.call(KERNEL.blas, arrays)
    torch = ops.torch_or_none()  # on numba's thread count
    if torch is not None:
        contenders["torch"] = torch_dweight(torch, arrays)
    with measure.thread_count(threads):
        timings = measure.compare(contenders, rounds=11, settle_after=tuple(contenders), seed=0)
    print(f"{problem} ({shape_text}), {threads} threads, 11 interleaved rounds; OPENBLAS_CORETYPE unset here; "
          f"torch: {bench.torch_info(torch)}")
    for name, timing in timings.items():
        packed = timings[name.replace("in place", "packed")] if name.startswith("in place") else timing
        print(f"  {name:32s} {timing.gflops(problem.flops):6.1f} GF/s; {measure.speedup(timing, packed).describe()} "
              f"the packed one; {measure.speedup(timing, timings['blas']).describe()} BLAS"
              + (f"; {measure.speedup(timing, timings['torch']).describe()} torch" if torch is not None else ""))


if __name__ == "__main__":
    main(*sys.argv[1:])
