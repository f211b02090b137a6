"""K and M blocks against the caches: one kernel's record config at one llm.c shape with its K block
(KC) and its task's rows (MC = MR x row_tiles) varied, everything else kept (B sliced where the
record indexes it by offset), against BLAS with beta called from compiled code (what the loaders run).

    python docs/blocking_scan.py [KERNEL] [B,T,C,OC]      # default backward_weight 4,1024,768,768

Beside each config: the bytes of the micro-kernel's operands over one K block (an MR x KC panel of A
and a KC x NR panel of B, which the k loop streams from L1) against L1, and of the task's block of A
(MC x KC, reused for every B panel) against L2, from machine.cache_sizes(). A search samples a
dozen or two configs of a space of thousands; this scan asks whether the blocking it kept is where
the time goes. Each config is verified before it is timed; measure.compare, 9 interleaved rounds in
random order, a pause after each contender, numba's thread count (the record's threads). Run on an
idle machine; OPENBLAS_CORETYPE is unset in this process.
"""
import dataclasses
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

import numba
from record_vs_blas import stored_entry  # docs/, this script's folder

from autotune import machine, measure, render, space, verify
from autotune.ops import KERNELS, Shape

numba.core.config.SLP_VECTORIZE, numba.core.config.LOOP_VECTORIZE = (render.COMPILE_FLAGS[name] for name in
                                                                      ("SLP_VECTORIZE", "LOOP_VECTORIZE"))
KC_CHOICES = (128, 256, 384, 512, 768)
MC_ROWS = (48, 96, 192, 384)  # rows of A per task, rounded to the register block's MR


def scanned(record_config, problem):
    """{config: None} of the scan (ordered): every KC x MC pair valid for the problem, B sliced."""
    base = dataclasses.replace(record_config, slice_b=True)
    useful_kc = space.choices(problem)["kc"]  # none past K
    found = {}
    for kc in KC_CHOICES:
        for rows in MC_ROWS:
            config = dataclasses.replace(base, kc=kc, row_tiles=max(1, rows // base.mr))
            if kc in useful_kc and space.invalid_reason(config, problem) is None:
                found[config] = None
    return list(found)


def footprint(config, caches):
    """The config's operands as fractions of L1 (micro-panels) and L2 (the task's block of A)."""
    micro = (config.mr + config.nr) * config.kc * 4
    block = config.mr * config.row_tiles * config.kc * 4
    return f"A+B micro-panels {micro / caches[1]:.2f} L1, A block {block / caches[2]:.2f} L2"


def main(kernel_name="backward_weight", shape_text="4,1024,768,768"):
    kernel = KERNELS[kernel_name]
    problem = kernel.problem(Shape.parse(shape_text))
    entry = stored_entry(problem)
    configs = scanned(entry.record.config, problem)
    verifier = verify.Verifier(kernel, problem)
    kernels = {config.label(): (config.threads, verifier.built(config)) for config in configs}
    kernels["blas"] = (machine.max_threads(), kernel.blas)
    contenders = measure.calls(kernel, kernel.inputs(problem, seed=1), kernels, ())
    with measure.thread_count(machine.max_threads()):
        timings = measure.compare(contenders, rounds=9, settle_after=tuple(contenders), seed=0)
    caches = machine.cache_sizes()
    print(f"{problem} ({shape_text}); the record: {entry.record.config.label()}; caches {caches}; "
          f"9 interleaved rounds, OPENBLAS_CORETYPE unset here; BLAS "
          f"{problem.flops / timings['blas'].median / 1e9:.1f} GF/s")
    for config in sorted(configs, key=lambda c: timings[c.label()].median):
        timing = timings[config.label()]
        print(f"  kc={config.kc:4d} MC={config.mr * config.row_tiles:4d}  {problem.flops / timing.median / 1e9:6.1f} GF/s  "
              f"{measure.speedup(timing, timings['blas']).describe()} BLAS  ({footprint(config, caches)})")


if __name__ == "__main__":
    main(*sys.argv[1:])
