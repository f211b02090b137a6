"""The command line refuses bad input: one line that says what is wrong and what to type instead,
a non-zero exit, no traceback, and nothing written to tuned/. Run as a user runs it, in a subprocess.
And what the command line prints says what will run."""
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_record

from autotune import __main__ as cli
from autotune import search, store

README = Path(__file__).resolve().parent.parent / "README.md"
BAD = [
    (["search", "--shape", "64,1024,768"], "four positive integers B,T,C,OC (e.g. 64,1024,768,768), got '64,1024,768'"),
    (["search", "--shape", "0,1024,768,768"], "four positive integers"),
    (["search", "--shape", "-1,2,3,4"], "four positive integers B,T,C,OC (e.g. 64,1024,768,768), got '-1,2,3,4'"),
    (["search", "--shape", "1,2,3,4,5"], "four positive integers"),
    (["search", "--shape", "B=1,T=2,C=3"], "four positive integers"),
    (["bench", "--shapes", "4,64,48"], "four positive integers"),
    (["search", "--trials", "0"], "--trials: must be a positive integer, got '0'"),
    (["search", "--trials", "-3"], "--trials: must be a positive integer, got '-3'"),
    (["search", "--timeout", "soon"], "--timeout: must be a positive number"),
    (["search", "--op", "sideways"], "--op: invalid choice"),
]


def autotune(*args, tuned):
    env = {**os.environ, "AUTOTUNE_TUNED_DIR": str(tuned)}
    return subprocess.run([sys.executable, "-m", "autotune", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def tuned(tmp_path):
    folder = tmp_path / "tuned"
    folder.mkdir()
    (folder / "keep.json").write_text("{}")
    return folder


def assert_refused(result, message, tuned):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr and not result.stdout
    assert sorted(p.name for p in tuned.iterdir()) == ["keep.json"]  # nothing written


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_arguments_are_refused_in_one_line(args, message, tuned):
    assert_refused(autotune(*args, tuned=tuned), message, tuned)


def test_a_tuned_dir_that_cannot_be_written_is_refused_before_the_search(tmp_path, tuned):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = autotune("search", "--tuned-dir", str(blocker / "tuned"), tuned=tuned)
    assert_refused(result, f"cannot write winners to {blocker / 'tuned'}", tuned)
    assert "--tuned-dir DIR or AUTOTUNE_TUNED_DIR" in result.stderr


def test_show_says_that_a_folder_is_missing(tmp_path, tuned):
    result = autotune("show", "--tuned-dir", str(tmp_path / "missing"), tuned=tuned)
    assert_refused(result, f"the folder {tmp_path / 'missing'} does not exist", tuned)


def test_help_shows_every_default_and_the_readme_lists_every_flag(tuned):
    readme = README.read_text()
    synopsis = readme[readme.index("## Command line"):]
    synopsis = synopsis[:synopsis.index("```", synopsis.index("```") + 3)]
    for command in ("search", "show", "bench", "sweep", "pull", "report"):
        result = autotune(command, "--help", tuned=tuned)
        assert result.returncode == 0 and "usage:" in result.stdout, result.stderr
        text = result.stdout
        flags = set(re.findall(r"(--[a-z][a-z-]+)", text)) - {"--help"}
        missing = sorted(f for f in flags if f not in synopsis)
        assert not missing, f"README's synopsis lacks {missing} of `{command}`"
    search_help = autotune("search", "--help", tuned=tuned).stdout
    assert "(default: 24)" in search_help and "(default: tpe)" in search_help


def test_a_reader_that_leaves_early_gets_no_traceback(tuned):
    """`show | grep -q ok` closes the pipe after the first match; the listing must not then crash."""
    env = {**os.environ, "AUTOTUNE_TUNED_DIR": str(tuned)}
    reader_gone = subprocess.Popen([sys.executable, "-m", "autotune", "show"], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
    reader_gone.stdout.close()
    assert "Traceback" not in reader_gone.stderr.read()
    assert reader_gone.wait(timeout=120) == 141  # as a shell reports a pipeline member killed by SIGPIPE


def test_a_search_runs_without_a_preset_openblas_kernel(tmp_path, tuned):
    """OPENBLAS_CORETYPE forces an OpenBLAS kernel at numpy's import: the search reruns itself without
    it, so that its decisions compare against the BLAS a user gets (bench and sweep do the same)."""
    env = {**os.environ, "AUTOTUNE_TUNED_DIR": str(tuned), "OPENBLAS_CORETYPE": "Haswell"}
    result = subprocess.run([sys.executable, "-m", "autotune", "search", "--shape", "1,8,16,16", "--trials", "1",
                             "--storage", f"sqlite:///{tmp_path / 'studies.sqlite3'}"],
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert "unsetting OPENBLAS_CORETYPE" in result.stderr
    assert "OPENBLAS_CORETYPE unset" in result.stdout


def test_a_search_table_says_what_the_loader_runs_when_the_winner_is_kept(tmp_path, capsys):
    """The table shows the best new config's speed; where the stored winner was kept and runs BLAS,
    the row must say so, or a user reads the new config's 1.07x BLAS as what runs."""
    stored, source = make_record(use="blas")
    store.save(stored, source, tmp_path)
    flipped = "rows-outer" if stored.config.order == "panels-outer" else "panels-outer"
    best, _ = make_record(config=dataclasses.replace(stored.config, order=flipped), vs_blas=1.07)
    cli.print_outcomes([search.Outcome(best, False, "kept the stored winner")], tmp_path)
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("forward"))
    assert row.endswith("kept, runs blas"), row
