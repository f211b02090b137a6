"""tuned/ records: one typed Record with one JSON form, atomic writes, never trusted when stale,
foreign or corrupt, and replaced only by a winner that is faster beyond the noise."""
import dataclasses
import json

import pytest

from autotune import load, machine, store
from autotune.ops import Problem
from conftest import make_record


def test_round_trip(tmp_path):
    record, source = make_record()
    assert store.save(record, source, tmp_path)
    [entry] = store.entries(tmp_path)
    assert (entry.status, entry.source, entry.record) == ("ok", source, record)
    assert store.Record.from_json(record.to_json()) == record
    header = (tmp_path / (entry.path.stem + ".py")).read_text()
    assert header.startswith("# Tuned winner: forward M=10 N=20 K=30")


def test_a_record_decided_against_the_stored_one_replaces_it(tmp_path):
    first, source = make_record(vs_blas=1.0)
    store.save(first, source, tmp_path)
    second = dataclasses.replace(first, vs_blas=(0.5, 0.5, 0.5), decision="won", replaces=first.source_sha256)
    assert store.save(second, source, tmp_path)  # the search compared it side by side with `first`
    assert store.entries(tmp_path)[0].record.decision == "won"


def test_a_record_stored_meanwhile_is_replaced_only_beyond_the_noise(tmp_path):
    """Two searches at once: the second one decided against no record (replaces=None), so it must
    beat the first one's speedup over BLAS (each measured against BLAS in its own run)."""
    first, source = make_record(vs_blas=1.10)
    store.save(first, source, tmp_path)
    assert not store.save(dataclasses.replace(first, vs_blas=(1.11, 1.1, 1.12), decision="close"), source, tmp_path)
    assert store.save(dataclasses.replace(first, vs_blas=(1.20, 1.1, 1.3), decision="faster"), source, tmp_path)
    assert store.entries(tmp_path)[0].record.decision == "faster"


@pytest.mark.parametrize("vs_blas, revised, runs", [
    ((1.01, 0.97, 1.05), "", "blas"),  # a tie, stored to run the kernel by the rule before 2026-12-02
    ((1.10, 1.05, 1.15), "", "kernel"),  # beat BLAS beyond the noise
    ((1.01, 0.97, 1.05), "the whole backward: the kernels ran faster", "kernel"),  # a whole-op timing chose it
])
def test_a_kernel_stored_on_a_tie_with_blas_runs_blas(tmp_path, vs_blas, revised, runs):
    record, source = make_record()
    store.save(dataclasses.replace(record, vs_blas=vs_blas, revised=revised), source, tmp_path)
    [entry] = store.entries(tmp_path)
    assert entry.record.use == runs
    choice = load.Winners(tmp_path).choice(record.problem)
    assert (choice.baseline, choice.config) == (("blas", None) if runs == "blas" else (None, record.config))


@pytest.mark.parametrize("damage, status", [
    (lambda path: path.write_text(path.read_text()[:40]), "corrupt"),  # truncated JSON
    (lambda path: path.write_text("[1, 2]"), "corrupt"),
    (lambda path: _edit(path, M="ten"), "corrupt"),
    (lambda path: path.with_suffix(".py").write_text(path.with_suffix(".py").read_text() + "x = 1\n"), "corrupt"),
    (lambda path: path.with_suffix(".py").unlink(), "corrupt"),
    (lambda path: _edit(path, config={**json.loads(path.read_text())["config"], "mr": "six"}), "corrupt"),
    (lambda path: _edit(path, fingerprint={**machine.fingerprint(), "numba": "0.1"}), "foreign"),
    (lambda path: _edit(path, fingerprint={**machine.fingerprint(), "target": "another target"}), "foreign"),
])
def test_damaged_or_foreign_records_are_not_trusted(tmp_path, damage, status):
    store.save(*make_record(), tmp_path)
    damage(next(tmp_path.glob("*.json")))
    [entry] = store.entries(tmp_path)
    assert entry.status == status and entry.reason


def _kin_fingerprint(name="kin0000001"):
    """This machine's fingerprint with other host feature flags (another VM of the same kind)."""
    return {**machine.fingerprint(), "features": "0123456789ab", "id": name}


def test_a_record_of_this_cpu_and_target_with_other_feature_flags_is_kin(tmp_path):
    store.save(*make_record(fingerprint=_kin_fingerprint()), tmp_path)
    [entry] = store.entries(tmp_path)
    assert entry.status == "kin" and "kin0000001" in entry.reason and entry.source
    store.save(*make_record(fingerprint={**_kin_fingerprint("kin0000002"), "numba": "0.1"}), tmp_path)
    assert sorted(e.status for e in store.entries(tmp_path)) == ["foreign", "kin"]  # features and more differ


def test_a_record_is_stale_when_todays_templates_render_its_config_to_other_code(tmp_path):
    """Stale follows the code a record ran, not the template files: another template hash whose
    rendering of this config is unchanged (a choice added for another kernel) keeps it in use."""
    store.save(*make_record(older_template=True), tmp_path)
    [entry] = store.entries(tmp_path)
    assert entry.status == "stale" and "other code" in entry.reason
    store.save(*make_record(template_hash="0" * 16, problem=Problem("forward", 11, 20, 30)), tmp_path)
    assert [e.status for e in store.entries(tmp_path)] == ["stale", "ok"]


def test_a_record_whose_source_differs_only_in_comments_is_not_stale(tmp_path):
    """A choice added to the templates is named in every kernel's parameter comment; older configs,
    where it renders no code, keep their records (the Zen 1 records when pack_b was added)."""
    record, source = make_record()
    edited = source.replace("# Parameters: ", "# Parameters (as an older template listed them): ", 1)
    edited = edited.replace("# on the stack, so LLVM", "# a trailing comment said it otherwise: LLVM", 1)
    assert edited.count("a trailing comment said it otherwise") == 1
    store.save(dataclasses.replace(record, source_sha256=store.source_digest(edited)), edited, tmp_path)
    [entry] = store.entries(tmp_path)
    assert entry.status == "ok"


def test_a_record_whose_source_is_not_python_is_corrupt_not_a_crash(tmp_path):
    record, _ = make_record()
    broken = 'def matmul_forward(:\n    """never closed\n'
    store.save(dataclasses.replace(record, source_sha256=store.source_digest(broken)), broken, tmp_path)
    [entry] = store.entries(tmp_path)
    assert entry.status == "corrupt" and "does not parse" in entry.reason


def test_an_unwritable_folder_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match="--tuned-dir"):
        store.check_writable(tmp_path / "file" / "tuned")


def _edit(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
