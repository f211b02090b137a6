"""The micro-kernel's k loop as the loader runs it: a kernel's record config on this machine (or
that config with KEY=VALUE changes), built as the search builds it, its entry function's object
code read from numba's cache with objdump, and the innermost loop with the most FMAs counted per
trip.

    python docs/micro_kernel_asm.py [KERNEL] [B,T,C,OC] [KEY=VALUE ...]
    python docs/micro_kernel_asm.py forward 4,1024,768,768 slice_b=True     # the default

Per trip of that loop: vector FMAs, broadcasts, other vector loads, stack accesses (spilled
values), and the rest (loop counters, address arithmetic, the branch); k steps per trip are the
FMAs over MR x NR / lanes. Then the loop itself. Reads the code users run: numba's cached entry
function, not a copy compiled in this process (docs/where-the-time-goes.md, "The search timed code
that users did not run"). Needs objdump (binutils). Compiles one kernel if numba's cache lacks it; times nothing.
"""
import dataclasses
import re
import sys

from compiled_here import cached_listing  # docs/, this script's folder
from record_vs_blas import stored_entry

from autotune import build, machine, space
from autotune.ops import KERNELS, Shape

DEFAULT = ("forward", "4,1024,768,768", "slice_b=True")
INSTRUCTION = re.compile(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$")
BRANCH_TARGET = re.compile(r"^([0-9a-f]+)\b")


def changed(config, changes):
    """`config` with KEY=VALUE changes (True/False, integers, else text)."""
    values = {}
    for change in changes:
        key, text = change.split("=", 1)
        values[key] = {"True": True, "False": False}.get(text, int(text) if text.isdigit() else text)
    return dataclasses.replace(config, **values)


def instructions(listing):
    """[(address, mnemonic, operands)] in the listing's order, symbols stripped from operands."""
    found = []
    for line in listing.splitlines():
        match = INSTRUCTION.match(line)
        if match:
            operands = re.sub(r"\s*<[^>]*>", "", match.group(3))
            found.append((int(match.group(1), 16), match.group(2), operands))
    return found


def backward_jump(address, mnemonic, operands):
    """The address a jump goes back to, or None."""
    target = BRANCH_TARGET.match(operands)
    if mnemonic.startswith("j") and target and int(target.group(1), 16) < address:
        return int(target.group(1), 16)
    return None


def innermost_loops(code):
    """Each loop body closed by a backward jump, from its target to the jump, with no loop inside."""
    start_of = {address: i for i, (address, _, _) in enumerate(code)}
    for i, instruction in enumerate(code):
        begin = start_of.get(backward_jump(*instruction))
        if begin is not None and not any(backward_jump(*inner) for inner in code[begin:i]):
            yield code[begin:i + 1]


def kind(mnemonic, operands):
    if mnemonic.startswith(("vfmadd", "vfnmadd")):
        return "FMAs"
    if mnemonic.startswith("vbroadcast"):
        return "broadcasts"
    if "(%rsp)" in operands:
        return "stack accesses"
    if mnemonic.startswith("vmov") and "(" in operands.split(",")[0]:
        return "vector loads"
    return "other"


def main(kernel_name, shape_text, *changes):
    kernel = KERNELS[kernel_name]
    problem = kernel.problem(Shape.parse(shape_text))
    config = changed(stored_entry(problem).record.config, changes)
    reason = space.invalid_reason(config, problem)
    if reason is not None:
        raise SystemExit(f"{config.label()} does not fit {problem}: {reason}")
    built = build.build_kernel(kernel, config)
    code = instructions(cached_listing(machine.cache_dir() / "kernels", f"{built.module.__name__}.{kernel.entry}-*.nbc"))
    hottest = max(innermost_loops(code), key=lambda body: sum(kind(m, o) == "FMAs" for _, m, o in body), default=None)
    if hottest is None:
        raise SystemExit("no loop found in the cached entry function")
    counts = {name: 0 for name in ("FMAs", "broadcasts", "vector loads", "stack accesses", "other")}
    for _, mnemonic, operands in hottest:
        counts[kind(mnemonic, operands)] += 1
    per_step = config.mr * config.nr // machine.target().lanes
    print(f"{kernel_name} {shape_text}, {config.label()}; {machine.target_label()}")
    print("per trip of the innermost loop with the most FMAs: " + ", ".join(f"{n} {c}" for n, c in counts.items())
          + f"; {counts['FMAs'] / per_step:g} k steps per trip ({per_step} FMAs a step)")
    for address, mnemonic, operands in hottest:
        print(f"  {address:6x}  {mnemonic:14s} {operands}")


if __name__ == "__main__":
    main(*(sys.argv[1:] or DEFAULT))
