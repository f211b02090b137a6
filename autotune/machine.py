"""What this machine is, as far as a tuned result depends on it."""
import functools
import hashlib
import json
import os
import platform
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm
import numba


@functools.cache
def fingerprint():
    """CPU model and features, core count, numba and llvmlite versions; `id` names them all."""
    facts = {
        "cpu": _cpu_model(),
        "llvm_cpu": llvm.get_host_cpu_name(),
        "features": hashlib.sha256(llvm.get_host_cpu_features().flatten().encode()).hexdigest()[:12],
        "cores": os.cpu_count(),
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
    }
    facts["id"] = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:10]
    return facts


@functools.cache
def vector_floats():
    """float32 lanes of the widest vector register: 16 with AVX-512, 8 with AVX2."""
    features = llvm.get_host_cpu_features()
    return 16 if features.get("avx512f") else 8


def vector_registers():
    return 32 if vector_floats() == 16 else 16


@functools.cache
def cache_sizes():
    """{1: L1 data bytes, 2: L2 bytes, 3: L3 bytes} of one core, from sysfs (typical sizes if absent)."""
    sizes = {1: 32 << 10, 2: 1 << 20, 3: 32 << 20}
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            kind = (index / "type").read_text().strip()
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        if kind != "Instruction" and text[-1] in "KM":
            sizes[level] = int(text[:-1]) << (10 if text[-1] == "K" else 20)
    return sizes


def max_threads():
    return numba.config.NUMBA_NUM_THREADS


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
