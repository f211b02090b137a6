"""tuned/: one record (JSON) and one kernel source (.py) per winner, per machine fingerprint.

    tuned/forward-65536x768x768-1a2b3c4d5e.json   what won, how fast, against what, on which machine
    tuned/forward-65536x768x768-1a2b3c4d5e.py     the winner's generated source, with a results header

A Record is built once, by the search's final comparison, and read by load, report, pull and the
command line; its JSON form is Record.to_json / Record.from_json. Writes are atomic (temporary
file + os.replace) under a lock. A record is used only if it is intact and was made on this
machine fingerprint (or a kin of it, below), and today's templates still render its config to its
source; anything else is reported, never trusted.

A kin record was made on the same CPU model, LLVM CPU name, vector target, core count and numba as
this machine, whose host feature flags (LLVM's list, hashed into the fingerprint) differ. Virtual
machines of one kind differ there: two 2-core Zen 3 machines here, both `znver3` with 256-bit
vectors, listed other flags (fingerprints e98c80d87e and 5e11efd19e), so this machine ran none of
the records tuned on the other. The flags that set the kernels' code (vector width, registers) are
in the target, read from the code numba emits, and a kernel is compiled here from its source: a
kin record runs correctly, and was measured on a CPU of the same model. Its status is "kin"; the loader
takes it where this machine has no record of its own for the size.
"""
import contextlib
import fcntl
import hashlib
import io
import json
import os
import tokenize
from dataclasses import dataclass, replace
from pathlib import Path

import jinja2

from autotune import machine, measure, render
from autotune.build import write_atomic
from autotune.ops import KERNELS, Problem
from autotune.space import Config

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "tuned"  # the `tuned` package, beside `autotune`
SOURCE_MARKER = "# ---- generated source, exactly as built ----\n"


@dataclass(frozen=True)
class Record:
    """One stored winner: what won, how fast against what, on which machine, and how it was found.

    Times are medians of the search's final comparison: the finalists, the stored winner they had to
    beat and the baselines, interleaved in one process at the winner's thread count."""
    problem: Problem
    shape: str  # the llm.c shape it was searched as
    config: Config
    use: str  # "kernel", or the fallback that ran faster and runs instead: "blas", "numpy" or "torch"
    seconds: float  # the kernel's median seconds per call
    spread: tuple  # its 25th and 75th percentiles
    rounds: int
    baselines: dict  # {"blas" | "numpy" | "torch": median seconds per call} (bench times every other contender)
    vs_blas: tuple  # the kernel's paired speedup over BLAS with beta: (median, low, high)
    decision: str  # why this record was stored, in words
    finalists: tuple  # ((Config, median seconds), ...) of the final comparison, fastest first
    blas: dict  # measure.blas_info()
    trials: dict  # complete, failed, rejected, study, failures
    compile_s: float
    search_s: float
    template: str
    template_hash: str  # of the templates it was rendered from (provenance; names its study)
    source_sha256: str
    compile_flags: dict
    fingerprint: dict
    versions: dict
    date: str
    replaces: str | None = None  # source_sha256 of the record this one was timed against, if any
    revised: str = ""  # why `use` changed after the record was stored: a later final comparison, the whole backward

    @property
    def gflops(self):
        return self.problem.flops / self.seconds / 1e9

    def speedup_over(self, baseline):
        """How many times faster the kernel ran than `baseline` (a key of baselines), by medians."""
        return self.baselines[baseline] / self.seconds

    def beats(self, other):
        """Whether this record's kernel is faster than `other`'s beyond the noise threshold, judged by
        their paired speedups over BLAS (each measured against BLAS in its own run, so drift cancels)."""
        return self.vs_blas[0] > other.vs_blas[0] * (1 + measure.NOISE_THRESHOLD)

    def to_json(self):
        return {
            "kernel": self.problem.kernel, "M": self.problem.M, "N": self.problem.N, "K": self.problem.K,
            "shape": self.shape, "config": self.config.params(), "config_label": self.config.label(),
            "use": self.use, "seconds": self.seconds, "spread": list(self.spread), "rounds": self.rounds,
            "gflops": round(self.gflops, 2), "baselines": self.baselines, "vs_blas": list(self.vs_blas),
            "decision": self.decision,
            "finalists": [{"config": c.params(), "seconds": s} for c, s in self.finalists],
            "blas": self.blas, "trials": self.trials, "compile_s": self.compile_s, "search_s": self.search_s,
            "template": self.template, "template_hash": self.template_hash, "source_sha256": self.source_sha256,
            "compile_flags": self.compile_flags, "fingerprint": self.fingerprint, "versions": self.versions,
            "date": self.date, "replaces": self.replaces, "revised": self.revised,
        }

    @classmethod
    def from_json(cls, d):
        """The Record of a JSON object; KeyError, TypeError or ValueError if it is not one."""
        return cls(
            problem=Problem(d["kernel"], int(d["M"]), int(d["N"]), int(d["K"])), shape=d["shape"],
            config=Config.from_dict(d["config"]), use=d["use"], seconds=float(d["seconds"]),
            spread=tuple(d["spread"]), rounds=int(d["rounds"]), baselines=dict(d["baselines"]),
            vs_blas=tuple(d["vs_blas"]), decision=d["decision"],
            finalists=tuple((Config.from_dict(f["config"]), float(f["seconds"])) for f in d["finalists"]),
            blas=dict(d["blas"]), trials=dict(d["trials"]), compile_s=d["compile_s"], search_s=d["search_s"],
            template=d["template"], template_hash=d["template_hash"], source_sha256=d["source_sha256"],
            compile_flags=dict(d["compile_flags"]), fingerprint=dict(d["fingerprint"]), versions=dict(d["versions"]),
            date=d["date"], replaces=d.get("replaces"), revised=d.get("revised", ""))

    def summary(self):
        """The header lines of a stored kernel: what it is, where it won and by how much."""
        p = self.problem
        runs = "" if self.use == "kernel" else (f"; it did not beat {self.use} beyond the noise, so the loader runs "
                                                f"{self.use} for this size")
        return [
            f"Tuned winner: {p.kernel} M={p.M} N={p.N} K={p.K} (searched as {self.shape})",
            f"config: {self.config.label()}{runs}",
            f"{self.gflops:.1f} GF/s on {self.config.threads} thread(s), median of {self.rounds} interleaved rounds;",
            f"  {self.vs_blas[0]:.2f}x BLAS with beta = 1 (95% interval {self.vs_blas[1]:.2f}-{self.vs_blas[2]:.2f}), "
            f"{self.speedup_over('numpy'):.2f}x numpy on 2-D arrays"
            + (f", {self.speedup_over('torch'):.2f}x PyTorch;" if "torch" in self.baselines else ";"),
            f"  BLAS: {'; '.join(self.blas['libraries'])}; OPENBLAS_CORETYPE {self.blas['OPENBLAS_CORETYPE']}.",
            f"machine: {self.fingerprint['cpu']}, target {self.fingerprint['target']} ({self.fingerprint['id']}), "
            f"numba {self.fingerprint['numba']}; {self.trials['complete']} trials timed, {self.trials['failed']} failed; "
            f"{self.date}",
            f"stored because: {self.decision}",
            *([f"use revised since: {self.revised}"] if self.revised else []),
        ]


def tuned_dir(override=None):
    return Path(override or os.environ.get("AUTOTUNE_TUNED_DIR") or DEFAULT_DIR)


def source_digest(source):
    return hashlib.sha256(source.encode()).hexdigest()


def stem(problem, fingerprint_id):
    return f"{problem.kernel}-{problem.M}x{problem.N}x{problem.K}-{fingerprint_id}"


@dataclass
class Entry:
    path: Path
    status: str  # "ok", "kin" (see kin), "foreign", "stale" or "corrupt"
    reason: str
    record: Record | None = None
    source: str | None = None


def save(record, source, directory):
    """Store a winner; True if stored. The search decided it against the record it found (`replaces`);
    if another search stored a different record since, this one must beat that one beyond the noise."""
    directory.mkdir(parents=True, exist_ok=True)
    name = stem(record.problem, record.fingerprint["id"])
    with _locked(directory):
        current = read(directory / f"{name}.json")
        if (current.status == "ok" and current.record.source_sha256 != record.replaces
                and not record.beats(current.record)):
            return False
        _write(record, source, directory / name)
    return True


def revise(record, directory):
    """Rewrite the stored record of `record`'s winner with `record`'s fields (its source unchanged);
    False if another winner was stored since."""
    path = directory / f"{stem(record.problem, record.fingerprint['id'])}.json"
    with _locked(directory):
        current = read(path)
        if current.status != "ok" or current.record.source_sha256 != record.source_sha256:
            return False
        _write(record, current.source, path.with_suffix(""))
    return True


def _write(record, source, base):
    header = "".join(f"# {line}\n" for line in record.summary())
    write_atomic(base.with_suffix(".py"), header + SOURCE_MARKER + source)
    write_atomic(base.with_suffix(".json"), json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n")


def entries(directory):
    """Every record in `directory`, each with its status."""
    return [read(path) for path in sorted(Path(directory).glob("*.json"))]


def read(path):
    """The record at `path` with its status; a missing file reads as corrupt."""
    try:
        record = under_todays_rule(Record.from_json(json.loads(path.read_text())))
        text = path.with_suffix(".py").read_text()
        source = text.split(SOURCE_MARKER, 1)[1] if SOURCE_MARKER in text else ""
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return Entry(path, "corrupt", f"{type(error).__name__}: {error}")
    if source_digest(source) != record.source_sha256:
        return Entry(path, "corrupt", f"{path.with_suffix('.py').name} does not match its record's hash", record)
    if record.problem.kernel not in KERNELS:
        return Entry(path, "corrupt", f"unknown kernel {record.problem.kernel!r}", record)
    here = machine.fingerprint()
    changed = sorted(k for k in here if k != "id" and record.fingerprint.get(k) != here[k])
    if changed and changed != ["features"]:
        return Entry(path, "foreign", f"made on another machine, target or numba ({', '.join(changed)} differ)", record)
    try:
        same = _renders_the_same(record, source)
    except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError,  # not a search's config
            SyntaxError, tokenize.TokenError) as error:  # or not Python
        return Entry(path, "corrupt", f"its config does not render or its source does not parse "
                                      f"({type(error).__name__}: {error})", record)
    if not same:
        return Entry(path, "stale", "the templates render its config to other code since it was tuned", record)
    if changed:
        return Entry(path, "kin", f"made on this CPU and target ({record.fingerprint.get('id', '?')}) with other "
                                  "feature flags", record, source)
    return Entry(path, "ok", "", record, source)


def under_todays_rule(record):
    """`record` with the use today's rule gives it. Until 2026-12-02 a kernel that tied BLAS in its
    final comparison (an interval reaching 1) was stored to run on the faster median; since, a
    kernel runs only where it beat BLAS beyond the noise (search._use): on a Zen 3 two forwards
    stored on ties read 0.90-0.96x and 0.74-1.02x the best other in three `bench` runs. Such a
    record runs BLAS, as a search would decide it again from the same comparison; a revised use (a
    later final comparison, or a whole-op timing: the backward, the step) stands."""
    if record.use != "kernel" or record.revised:
        return record
    versus = measure.Speedup(*record.vs_blas, rounds=record.rounds)
    if versus.verdict() == "faster":
        return record
    return replace(record, use="blas", revised=f"stored on a tie with BLAS ({versus.describe()}) by the rule before "
                                               "2026-12-02; a kernel runs only where it beat BLAS beyond the noise")


def _renders_the_same(record, source):
    """Whether today's templates render the record's config to the code it was tuned as (its stored
    `source`), comments aside. Stale is a change to the code a record ran, not to the template files
    or the comments: a choice added for one kernel (off in older configs, where it renders no code)
    leaves the other kernels' records, and this one's, valid; the header's parameter list, which
    names the new choice, is a comment. (autotune/stack_arrays.py, which every kernel imports, is
    not in the source: a change to it calls for a re-tune by hand.)"""
    rendered = render.render(KERNELS[record.problem.kernel], record.config)
    if source_digest(rendered) == record.source_sha256:
        return True
    if _without_comment_lines(rendered) == _without_comment_lines(source):  # e.g. the header's parameter list
        return True
    return _code_of(rendered) == _code_of(source)  # exact, trailing comments too: 3 ms a source, so not first


def _without_comment_lines(source):
    """`source`'s lines but its whole-line comments (and a docstring's lines that start with #: text,
    not code). Tokenizing every record on every load took 0.2 s for this repo's 27 records of a
    machine; this takes milliseconds."""
    return [line for line in source.splitlines() if not line.lstrip().startswith("#")]


def _code_of(source):
    """The Python tokens of `source` without its comments and blank lines."""
    skipped = (tokenize.COMMENT, tokenize.NL)
    return [(t.type, t.string) for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type not in skipped]


def check_writable(directory):
    """Raise OSError, with what to do, unless `directory` can be created and written."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise OSError(f"cannot write winners to {directory} ({error.strerror or error}); "
                      f"choose another folder with --tuned-dir DIR or AUTOTUNE_TUNED_DIR") from None


@contextlib.contextmanager
def _locked(directory):
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
