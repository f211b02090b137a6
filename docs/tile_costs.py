"""Where a tuned kernel's time goes besides its k loop: packing B, threads, and a cost per tile.

    python docs/tile_costs.py [KERNEL] [M x N x K]     # default: forward 65536x768x768 (the headline)

Uses this machine's record for the size (run it on a tuned checkout) and times, interleaved
(measure.compare, 7 rounds in random order, medians; OPENBLAS_CORETYPE unset in this process):

1. B's pack buffer and packing, per call: `aligned_empty` alone, and `pack_panels` of the whole B
   into it, beside the whole call (forward and backward_input, which pack B once per call).
2. The same compiled kernel on 1 and 2 threads at its size and at narrower N and shorter K, as a
   share of the FMA peak of that many threads: the k loop is the same at every size, so what
   falls with K is a cost paid once per MR x NR tile (its start and its store), and what falls from
   1 to 2 threads is shared by the cores.
3. How evenly the tasks (or, split K, the K blocks) fall on the threads, as the loader runs the
   kernel at `bench`'s default shapes: each worker takes every THREADS-th task, so the busiest
   takes ceil(tasks / threads).
"""
import math
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

from autotune import bench, load, machine, measure, space
from autotune.ops import KERNELS, OPS, Problem, Shape

ROUNDS = 7


def packing_share(kernel, problem, function, arrays):
    """Median microseconds of the call, of a fresh pack buffer, and of packing B into one."""
    module = sys.modules[function.__module__]
    if kernel.name not in ("forward", "backward_input"):
        return None
    weight = arrays["weight"]
    source = weight.T if kernel.name == "forward" else weight
    panels = -(-problem.N // module.NR)
    shape = (panels, problem.K, module.NR)
    buffer = module.aligned_empty(shape)
    timings = measure.compare({
        "whole call": lambda: kernel.call(function, arrays),
        "pack buffer (aligned_empty)": lambda: module.aligned_empty(shape),
        "packing B (pack_panels)": lambda: module.pack_panels(buffer, source, 0, problem.K),
    }, rounds=ROUNDS, seed=0)
    return {name: timing.median * 1e6 for name, timing in timings.items()}


def sizes_to_scan(problem):
    """The size itself, then N cut to a quarter and to one 32-float panel, then K cut to a half and a third."""
    M, N, K = problem.M, problem.N, problem.K
    rows = min(M, 16384)
    sizes = [(M, N, K), (rows, N, K), (rows, max(32, N // 4), K), (rows, 32, K), (rows, N, max(48, K // 2)),
             (rows, N, max(48, K // 3))]
    return list(dict.fromkeys(Problem(problem.kernel, *size) for size in sizes))


def thread_scan(kernel, function, problems):
    """{(problem, threads): GF/s} of the same compiled kernel."""
    contenders = {}
    for problem in problems:
        arrays = kernel.inputs(problem)
        for threads in (1, machine.max_threads()):
            contenders[(problem, threads)] = measure.on_threads(threads, lambda a=arrays: kernel.call(function, a))
    timings = measure.compare(contenders, rounds=ROUNDS, seed=0)
    return {(problem, threads): timing.gflops(problem.flops) for (problem, threads), timing in timings.items()}


def balance(shapes):
    """Lines: per kernel that runs a parallel config at `shapes`, its tasks and how busy the threads are."""
    lines = []
    winners = load.winners()
    for shape in shapes:
        for name in OPS["all"]:
            problem = KERNELS[name].problem(shape)
            config = winners.choice(problem).config
            if config is None or config.threads == 1:
                continue
            if config.split_k:
                units, what = -(-problem.K // config.kc), "K blocks"
            else:
                units = space.task_count(config, problem)
                what = "tasks"
            busy = units / (math.ceil(units / config.threads) * config.threads)
            lines.append(f"  {shape!s:28s} {name:16s} {units:5d} {what:8s} on {config.threads} threads: "
                         f"busy {busy:.0%} of the time the busiest one takes")
    return lines


def main(kernel_name="forward", size="65536x768x768"):
    kernel = KERNELS[kernel_name]
    problem = Problem(kernel_name, *map(int, size.split("x")))
    function, _ = load.winners().function(problem)
    choice = load.winners().choice(problem)
    if choice.config is None:
        raise SystemExit(f"{problem} runs {choice.baseline} here ({choice.origin}): no kernel to study")
    threads = machine.max_threads()
    print(f"{problem}: {choice.config.label()} ({choice.origin}); {ROUNDS} interleaved rounds, medians")

    shares = packing_share(kernel, problem, function, kernel.inputs(problem))
    if shares:
        whole = shares["whole call"]
        print("1. B's pack buffer and packing, microseconds per call:")
        for name, micros in shares.items():
            print(f"  {name:30s} {micros:10.1f}  ({micros / whole:.1%} of the call)")

    peaks = {1: bench.fma_peak(1), threads: bench.fma_peak(threads)}
    print(f"2. the same kernel on 1 and {threads} threads, % of the FMA peak of as many threads "
          f"({peaks[1]:.1f} and {peaks[threads]:.1f} GF/s):")
    for (size_problem, count), gflops in thread_scan(kernel, function, sizes_to_scan(problem)).items():
        print(f"  {size_problem.M}x{size_problem.N}x{size_problem.K:<6d} {count} thread(s) {gflops:6.1f} GF/s "
              f"{gflops / peaks[count]:.0%}")

    print("3. tasks per worker as the loader runs each kernel at bench's default shapes:")
    print("\n".join(balance([Shape.parse(text) for text in bench.DEFAULT_SHAPES])))


if __name__ == "__main__":
    main(*sys.argv[1:])
