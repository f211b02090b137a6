"""What this machine is, as far as a tuned result depends on it: the CPU numba compiles for (the
target), the host it runs on, and the fingerprint that names both.

The target is what numba's code generator aims at: the host CPU unless NUMBA_CPU_NAME and
NUMBA_CPU_FEATURES say otherwise (e.g. `haswell` and `-avx512f` make AVX2 code on an AVX-512 host).
Its vector width and register count are read from the code numba emits for a small probe, so any
target LLVM knows is described without a table of CPU names. Where that code would leave half of
an AVX-512 unit idle, `import autotune` asks for the full width (use_full_vector_width).
"""
import functools
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm
import numba
import numba.core.codegen
import numba.core.config
import numba.core.registry


@dataclass(frozen=True)
class Target:
    """The vector unit numba compiles for."""
    isa: str  # "x86_64", "aarch64", ...
    cpu: str  # LLVM's CPU name, e.g. "znver1"
    features: str  # NUMBA_CPU_FEATURES: "host" stands for the host CPU's own, e.g. "host,-prefer-256-bit"
    vector_bits: int  # widest vector register the generated code uses
    registers: int  # architectural vector registers

    @property
    def lanes(self):
        """float32 values per vector register."""
        return self.vector_bits // 32


@functools.cache
def target():
    cpu = numba.core.config.CPU_NAME or llvm.get_host_cpu_name()
    features = numba.core.config.CPU_FEATURES or host_features()
    return Target(platform.machine(), cpu, features.replace(host_features(), "host", 1), *_known_probe(cpu, features))


def host_features():
    """The host CPU's features as numba passes them to LLVM when NUMBA_CPU_FEATURES is unset."""
    return numba.core.codegen.get_host_cpu_features()


# LLVM tunes Intel's AVX-512 cores (Skylake-X to Granite Rapids) to prefer 256-bit vectors, so
# numba's code there uses half of each FMA unit. On an Intel AVX-512 host (KVM, 2 cores, LLVM
# `rocketlake`, 2026-12-02) the FMA peak read 259 GF/s with 256-bit vectors and 476 with
# -prefer-256-bit; an 8-trial forward search at 4,1024,768,768 found 137 and 270 GF/s (0.40x and
# 0.81x BLAS with beta). AMD's Zen 4 and 5 get 512-bit code without it.
FULL_WIDTH = "-prefer-256-bit"


def use_full_vector_width():
    """Run on `import autotune`: where the host has AVX-512 but numba's code would use 256-bit
    vectors, set NUMBA_CPU_FEATURES to the host's features and FULL_WIDTH, for this process and the
    children it starts. A NUMBA_CPU_NAME or NUMBA_CPU_FEATURES the user set is kept, and so is the
    target numba has already compiled for in this process (the fingerprint must describe the code)."""
    if os.environ.get("NUMBA_CPU_NAME") or os.environ.get("NUMBA_CPU_FEATURES"):
        return
    host = host_features()
    if not wants_full_width(host, _known_probe(llvm.get_host_cpu_name(), host)[0]):
        return
    if "_toplevel_target_context" in vars(numba.core.registry.cpu_target):
        warnings.warn(f"autotune: numba compiled code before autotune was imported, so its kernels use "
                      f"256-bit vectors on this AVX-512 CPU and run at about half speed; import autotune "
                      f"(or tuned) first, or set NUMBA_CPU_FEATURES to the host's features and {FULL_WIDTH}",
                      stacklevel=3)
        return
    os.environ["NUMBA_CPU_FEATURES"] = f"{host},{FULL_WIDTH}"
    numba.core.config.reload_config()
    target.cache_clear()
    fingerprint.cache_clear()


def wants_full_width(features, vector_bits):
    """True for a host whose `features` include AVX-512 but whose code uses `vector_bits` < 512."""
    return "+avx512f" in features.split(",") and vector_bits < 512


def _known_probe(cpu, features):
    """The probe's answer for NUMBA_CPU_NAME `cpu` and NUMBA_CPU_FEATURES `features`, kept in the build
    cache. The probe compiles in a child (a second or two, once per machine), so that it does not
    fix this process's target before use_full_vector_width has chosen it."""
    key = json.dumps([cpu, features, llvm.get_host_cpu_name(), host_features(), numba.__version__, llvmlite.__version__])
    path = cache_dir() / f"vector-unit-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    try:
        return tuple(json.loads(path.read_text()))
    except (OSError, ValueError):
        answer = _probe_in_child(cpu, features)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(answer))
        os.replace(tmp, path)
        return answer


def child_environment(**extra):
    """os.environ for a child Python that imports this package (wherever it lies), plus `extra`."""
    package_root = str(Path(__file__).resolve().parent.parent)
    return {**os.environ, **extra,
            "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}


def _probe_in_child(cpu, features):
    env = child_environment(NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES=features)
    child = subprocess.run([sys.executable, "-c", "import json; from autotune import machine; print(json.dumps(machine._probe()))"],
                           env=env, capture_output=True, text=True, timeout=300, check=False)
    if child.returncode != 0:
        raise RuntimeError(f"autotune: the vector unit probe failed for {cpu} ({features}):\n{child.stderr[-2000:]}")
    return tuple(json.loads(child.stdout.strip().splitlines()[-1]))


# The micro-kernel's own pattern at a size no target holds in registers: a 32 x 16 block of float32
# accumulators on the stack, each row updated by a broadcast times a 16-float row. The SLP pass packs
# it into the widest vectors the target has and uses every vector register it has: the assembly
# shows both.
_PROBE = """
from numba import njit
from numba.np.numpy_support import carray
from autotune.stack_arrays import stack_f32

@njit("void(float32[:, ::1], float32[::1], float32[:, ::1])", fastmath=True)
def probe(a, b, out):
    acc = carray(stack_f32(512), (32, 16))
    for r in range(32):
        for j in range(16):
            acc[r, j] = 0.0
    for k in range(a.shape[0]):
        row = a[k]
""" + "".join(f"""        a{r} = row[{r}]
        for j in range(16):
            acc[{r}, j] += a{r} * b[j]
""" for r in range(32)) + """    for r in range(32):
        for j in range(16):
            out[r, j] = acc[r, j]
"""


def _probe():
    """(vector bits, vector registers) of the code numba emits for this target."""
    namespace = {}
    saved = numba.core.config.SLP_VECTORIZE, numba.core.config.LOOP_VECTORIZE
    numba.core.config.SLP_VECTORIZE, numba.core.config.LOOP_VECTORIZE = 1, 0  # the kernels' settings
    try:
        exec(compile(_PROBE, "<vector unit probe>", "exec"), namespace)
        assembly = "\n".join(namespace["probe"].inspect_asm().values())
    finally:
        numba.core.config.SLP_VECTORIZE, numba.core.config.LOOP_VECTORIZE = saved
    return read_vector_unit(assembly)


def read_vector_unit(assembly):
    """(vector bits, vector registers) from assembly: x86 names xmm/ymm/zmm 0-31 (16 of them without
    AVX-512); aarch64 names v0-v31 (NEON, 128 bits) or z0-z31 (SVE, scalable: counted as 128)."""
    x86 = re.findall(r"%([xyz])mm(\d+)", assembly)
    if x86:
        bits = max({"x": 128, "y": 256, "z": 512}[kind] for kind, _ in x86)
        registers = 32 if bits == 512 or max(int(n) for _, n in x86) > 15 else 16
        return bits, registers
    return 128, 32  # aarch64 and other RISC vector units: 128-bit registers, 32 of them


@functools.cache
def fingerprint():
    """Host CPU model and features, the target, core count, numba and llvmlite versions; `id` names them all."""
    facts = {
        "cpu": _cpu_model(),
        "llvm_cpu": llvm.get_host_cpu_name(),
        "features": hashlib.sha256(llvm.get_host_cpu_features().flatten().encode()).hexdigest()[:12],
        "target": target_label(),
        "cores": os.cpu_count(),
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
    }
    facts["id"] = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:10]
    return facts


def target_label(t=None):
    """e.g. "znver1 (host features), 256-bit vectors, 16 registers"."""
    t = t or target()
    features = t.features.replace("host", "host features", 1) if t.features.startswith("host") else f"features {t.features}"
    return f"{t.cpu} ({features}), {t.vector_bits}-bit vectors, {t.registers} registers"


@functools.cache
def cache_sizes():
    """{1: L1 data bytes, 2: L2 bytes, 3: L3 bytes} of one core, from sysfs (typical sizes if absent)."""
    sizes = {1: 32 << 10, 2: 1 << 20, 3: 32 << 20}
    for level, text in _data_caches("size"):
        if text[-1:] in ("K", "M"):
            sizes[level] = int(text[:-1]) << (10 if text[-1] == "K" else 20)
    return sizes


@functools.cache
def l1_data_ways():
    """Ways of associativity of one core's L1 data cache, from sysfs (8, the usual value, if absent)."""
    return next((int(text) for level, text in _data_caches("ways_of_associativity") if level == 1 and text.isdigit()), 8)


def _data_caches(field):
    """(level, the sysfs `field` as text) of each data or unified cache of cpu0 that reports it."""
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            kind = (index / "type").read_text().strip()
            level = int((index / "level").read_text())
            text = (index / field).read_text().strip()
        except (OSError, ValueError):
            continue
        if kind != "Instruction":
            yield level, text


def cache_dir():
    """Where built kernels, probes and the default study database live; never inside the repository."""
    return Path(os.environ.get("AUTOTUNE_CACHE_DIR") or Path.home() / ".cache" / "autotune")


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
