"""The first calls after a pause: how long a parallel op takes to run at its steady speed (measure.wake).

    python docs/wake_stall.py [B,T,C,OC ...]      # default: five shapes, 4,64,48,48 to 4,1024,768,768

For each shape, the forward through what the loader runs ("kernels": a generated kernel or BLAS
on numba's OpenMP threads; under 4 MFLOP BLAS on OpenBLAS's own), scipy's BLAS with beta
(OpenBLAS's pthreads) and PyTorch where installed (its OpenMP threads), each on every core: 15
times a 0.3 s pause (measure.settle) then calls in a row, 8 of them ("8 calls": the threads ran
briefly between pauses) or about 80 ms of them (at least 8). Prints the steady time of a call (the
median of the last half of each run of calls), the first and second calls and the mean of calls
3-8 in steady calls, and how many milliseconds the calls before the first steady one (within 10%)
took; medians over the 15 pauses. Run with nothing else running.
"""
import statistics
import sys
import time

from autotune import bench, machine, measure, ops

SHAPES = ["4,64,48,48", "4,64,192,192", "8,128,192,192", "4,256,768,768", "4,1024,768,768"]
RUN_S = 0.08


def after_pauses(fn, count, pauses=15):
    """Medians over the pauses of (steady seconds, first call, second call, mean of calls 3-8 in
    steady calls, seconds before the first steady call)."""
    results = []
    for _ in range(pauses):
        measure.settle()
        times = []
        for _ in range(count):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        steady = statistics.median(times[count // 2:])
        first_steady = next(i for i, t in enumerate(times) if t < 1.1 * steady)
        early = times[2:8]
        results.append((steady, times[0] / steady, times[1] / steady, statistics.mean(early) / steady,
                        sum(times[:first_steady])))
    return [statistics.median(column) for column in zip(*results)]


def main(shapes):
    torch = ops.torch_or_none()
    measure.warm_blas()
    for text in shapes:
        contenders = bench.contenders("forward", bench.op_arrays(ops.Shape.parse(text)), torch)
        for name in ("kernels", "BLAS beta", "torch"):
            if name not in contenders:
                continue
            with measure.thread_count(machine.max_threads()):
                long_run = max(8, round(RUN_S / measure.call_seconds(contenders[name])))
                for label, count in (("8 calls", 8), ("80 ms", long_run)):
                    steady, first, second, early, waking = after_pauses(contenders[name], count)
                    print(f"{text:16s} {name:10s} {label:8s} steady {steady * 1e3:8.3f} ms; first call {first:5.1f}x, "
                          f"second {second:5.1f}x, calls 3-8 {early:4.2f}x steady; {waking * 1e3:5.1f} ms before "
                          f"a steady call", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or SHAPES)
