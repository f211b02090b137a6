"""Compile rendered source with numba through a content-addressed file, so compiles are reused.

The file is named by the hash of its source and the compile settings and is never rewritten;
numba's cache=True keeps the machine code beside it, so a new process that loads the same
source (a search resuming, the loader importing a winner) does not compile again.

A module is compiled in a child process and then imported here from numba's cache (compiled here
only if the child fails, so that its error is raised here): the code a process compiles for itself
is not always the code its cache holds. A kernel's helpers (multiply_block, ...) are compiled once
on their own and once more inside the entry function's module, which the cache keeps; the process
that compiled them evidently calls the first copy. With NR = 48 (three AVX-512 vectors) that copy
is vectorized four floats wide: 13.0-13.6 GF/s against 201-212 loaded from the cache (Zen 4,
4,1024,768,768 forward, 8 x 48; docs/compiled_here.py). The search timed the first, users ran
the second.
"""
import contextlib
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numba.core.config
from llvmlite import binding as llvm

from autotune import machine, render

CHILD_COMPILE_LIMIT_S = 900.0


@dataclass
class Built:
    module: object
    seconds: float  # wall time to import, compile included
    compiled: bool  # False when numba took every function from its cache

    def function(self, kernel):
        """The kernel's entry function (an ops.Kernel's `entry`) in the built module."""
        return getattr(self.module, kernel.entry)


def build(source, flags):
    """Import `source` as a module compiled with numba.core.config `flags` (e.g. SLP_VECTORIZE=1)."""
    digest = hashlib.sha256((source + repr(sorted(flags.items()))).encode()).hexdigest()[:20]
    name = f"autotune_kernel_{digest}"
    if name in sys.modules:
        return Built(sys.modules[name], 0.0, False)
    path = machine.cache_dir() / "kernels" / f"{name}.py"
    if not path.exists():
        write_atomic(path, source)
    start = time.perf_counter()
    compiled_in_child = _compile_in_child(name, path, flags)
    with _numba_settings(flags):
        module = _import(name, path)
    seconds = time.perf_counter() - start
    return Built(module, seconds, compiled_in_child or _compiled_any(module))


def build_kernel(kernel, config):
    """`kernel` (an ops.Kernel) rendered with `config` and built; its function is `.module.<kernel.entry>`,
    also `Built.function(kernel)`."""
    return build(render.render(kernel, config), render.COMPILE_FLAGS)


def _compile_in_child(name, path, flags):
    """Have a child process compile `path` into numba's cache, unless one did for this numba and CPU
    target; True if it compiled anything (a cache written before the child existed is only loaded).
    If the child fails, the import here compiles and raises the error."""
    marker = _compiled_marker(path)
    if marker.exists():
        return False
    env = machine.child_environment()
    child = subprocess.run([sys.executable, "-m", "autotune.build", str(path), name, json.dumps(flags)],
                           env=env, capture_output=True, timeout=CHILD_COMPILE_LIMIT_S, check=False)
    if child.returncode != 0:
        return False
    write_atomic(marker, "")
    return child.stdout.split()[-1:] == [b"compiled"]


def _compiled_marker(path):
    """The file that says a child compiled `path` into numba's cache for this numba and CPU target."""
    config = numba.core.config
    target = (f"numba {numba.__version__}, cpu {config.CPU_NAME or llvm.get_host_cpu_name()}, "
              f"features {config.CPU_FEATURES or llvm.get_host_cpu_features().flatten()}")
    return path.with_name(f"{path.stem}.{hashlib.sha256(target.encode()).hexdigest()[:12]}.compiled")


@contextlib.contextmanager
def _numba_settings(flags):
    # numba reads these at each compile; the kernels have explicit signatures, so they compile
    # (or load from cache) at import, inside this block.
    saved = {key: getattr(numba.core.config, key) for key in flags}
    try:
        for key, value in flags.items():
            setattr(numba.core.config, key, value)
        yield
    finally:
        for key, value in saved.items():
            setattr(numba.core.config, key, value)


def _import(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _compiled_any(module):
    dispatchers = [v for v in vars(module).values() if isinstance(v, numba.core.dispatcher.Dispatcher)]
    return any(sum(d.stats.cache_misses.values()) for d in dispatchers)


def write_atomic(path, text):
    """Write `text` to `path` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


if __name__ == "__main__":  # the child of _compile_in_child: python -m autotune.build PATH NAME FLAGS
    _path, _name, _flags = sys.argv[1:]
    with _numba_settings(json.loads(_flags)):
        print("compiled" if _compiled_any(_import(_name, Path(_path))) else "loaded")
