"""tuned/: one record (JSON) and one kernel source (.py) per winner, per machine fingerprint.

    tuned/forward-65536x768x768-1a2b3c4d5e.json   what won, how fast, against what, on which machine
    tuned/forward-65536x768x768-1a2b3c4d5e.py     the winner's generated source, with a results header

Writes are atomic (temporary file + os.replace) under a lock, and a slower result never replaces
a faster one for the same key. A record is used only if it is intact and was made on this
machine fingerprint with the current templates; anything else is reported, never trusted.
"""
import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from autotune import machine, render
from autotune.build import write_atomic
from autotune.ops import KERNELS, Problem

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "tuned"
SOURCE_MARKER = "# ---- generated source, exactly as built ----\n"
REQUIRED = ("kernel", "M", "N", "K", "config", "fingerprint", "template_hash", "source_sha256",
            "compile_flags", "median_s")


def tuned_dir(override=None):
    return Path(override or os.environ.get("AUTOTUNE_TUNED_DIR") or DEFAULT_DIR)


def source_digest(source):
    return hashlib.sha256(source.encode()).hexdigest()


def stem(problem, fingerprint_id):
    return f"{problem.kernel}-{problem.M}x{problem.N}x{problem.K}-{fingerprint_id}"


@dataclass
class Entry:
    path: Path
    status: str  # "ok", "foreign", "stale" or "corrupt"
    reason: str
    record: dict | None = None
    source: str | None = None

    @property
    def problem(self):
        r = self.record
        return Problem(r["kernel"], r["M"], r["N"], r["K"])


def save(record, source, directory):
    """Store a winner unless this machine already has a faster one for the same key; True if stored."""
    directory.mkdir(parents=True, exist_ok=True)
    name = stem(Problem(record["kernel"], record["M"], record["N"], record["K"]), record["fingerprint"]["id"])
    with _locked(directory):
        current = read(directory / f"{name}.json")
        if current.status == "ok" and current.record["median_s"] <= record["median_s"]:
            return False
        header = "".join(f"# {line}\n" for line in record_summary(record))
        write_atomic(directory / f"{name}.py", header + SOURCE_MARKER + source)
        write_atomic(directory / f"{name}.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
    return True


def entries(directory):
    """Every record in `directory`, each with its status."""
    return [read(path) for path in sorted(Path(directory).glob("*.json"))]


def read(path):
    """The record at `path` with its status; a missing file reads as corrupt."""
    try:
        record = json.loads(path.read_text())
        missing = [key for key in REQUIRED if key not in record] if isinstance(record, dict) else ["all"]
        if missing:
            return Entry(path, "corrupt", f"missing fields {missing}")
        text = path.with_suffix(".py").read_text()
        source = text.split(SOURCE_MARKER, 1)[1] if SOURCE_MARKER in text else ""
    except (OSError, ValueError) as error:
        return Entry(path, "corrupt", f"{type(error).__name__}: {error}")
    if source_digest(source) != record["source_sha256"]:
        return Entry(path, "corrupt", f"{path.with_suffix('.py').name} does not match its record's hash", record)
    if record["kernel"] not in KERNELS:
        return Entry(path, "corrupt", f"unknown kernel {record['kernel']!r}", record)
    here = machine.fingerprint()
    if record["fingerprint"] != here:
        changed = sorted(k for k in here if record["fingerprint"].get(k) != here[k])
        return Entry(path, "foreign", f"made on another machine or numba ({', '.join(changed)} differ)", record)
    if record["template_hash"] != render.template_hash(KERNELS[record["kernel"]]):
        return Entry(path, "stale", "templates changed since it was tuned", record)
    return Entry(path, "ok", "", record, source)


def record_summary(r):
    """The header lines of a stored kernel: what it is, where it won and by how much."""
    base = r["baselines"]
    return [
        f"Tuned winner: {r['kernel']} M={r['M']} N={r['N']} K={r['K']} (searched as {r['shape']})",
        f"config: {r['config_label']}" + ("; numpy/BLAS was faster, so the loader calls BLAS for this size"
                                          if r.get("use") == "blas" else ""),
        f"{r['gflops']:.1f} GF/s, median of {r['repeats']} = {r['median_s'] * 1e3:.3f} ms at {r['config']['threads']} threads;"
        f" {base['numpy_ratio']:.2f}x numpy ({base['numpy_gflops']:.1f} GF/s), {base['sgemm_ratio']:.2f}x bare sgemm,",
        f"  BLAS {base['blas']['library']} {base['blas']['architecture']} "
        f"(OPENBLAS_CORETYPE={base['blas']['OPENBLAS_CORETYPE']}), measured interleaved in the same process;",
        f"  naive llm.c loop {base['naive_gflops']:.1f} GF/s.",
        f"machine: {r['fingerprint']['cpu']} ({r['fingerprint']['id']}), numba {r['fingerprint']['numba']};"
        f" {r['trials']['complete']} trials timed, {r['trials']['failed']} failed, {r['trials']['rejected']} rejected;"
        f" {r['date']}",
    ]


@contextlib.contextmanager
def _locked(directory):
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

