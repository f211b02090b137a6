"""Compile rendered source with numba through a content-addressed file, so compiles are reused.

The file is named by the hash of its source and the compile settings and is never rewritten;
numba's cache=True keeps the machine code beside it, so a new process that loads the same
source (a search resuming, the loader importing a winner) does not compile again.
"""
import contextlib
import hashlib
import importlib.util
import os
import sys
import tempfile
import time
from dataclasses import dataclass

import numba.core.config

from autotune import machine, render


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
    with _numba_settings(flags):
        module = _import(name, path)
    seconds = time.perf_counter() - start
    return Built(module, seconds, _compiled_any(module))


def build_kernel(kernel, config):
    """`kernel` (an ops.Kernel) rendered with `config` and built; its function is `.module.<kernel.entry>`,
    also `Built.function(kernel)`."""
    return build(render.render(kernel, config), render.COMPILE_FLAGS)


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
