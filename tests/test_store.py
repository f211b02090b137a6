"""tuned/ records: atomic, keyed by machine, never trusted when stale, foreign or corrupt."""
import json

import pytest

from autotune import machine, store
from conftest import make_record


def test_round_trip(tmp_path):
    record, source = make_record()
    assert store.save(record, source, tmp_path)
    [entry] = store.entries(tmp_path)
    assert (entry.status, entry.source, entry.record) == ("ok", source, record)
    header = (tmp_path / (entry.path.stem + ".py")).read_text()
    assert header.startswith("# Tuned winner: forward M=10 N=20 K=30")


def test_a_slower_result_never_replaces_a_faster_one(tmp_path):
    store.save(*make_record(median_s=1.0), tmp_path)
    assert not store.save(*make_record(median_s=2.0), tmp_path)
    assert store.save(*make_record(median_s=0.5), tmp_path)
    assert store.entries(tmp_path)[0].record["median_s"] == 0.5


@pytest.mark.parametrize("damage, status", [
    (lambda path: path.write_text(path.read_text()[:40]), "corrupt"),  # truncated JSON
    (lambda path: path.write_text("[1, 2]"), "corrupt"),
    (lambda path: path.with_suffix(".py").write_text(path.with_suffix(".py").read_text() + "x = 1\n"), "corrupt"),
    (lambda path: path.with_suffix(".py").unlink(), "corrupt"),
    (lambda path: _edit(path, fingerprint={**machine.fingerprint(), "numba": "0.1"}), "foreign"),
    (lambda path: _edit(path, template_hash="0" * 16), "stale"),
])
def test_damaged_or_foreign_records_are_not_trusted(tmp_path, damage, status):
    store.save(*make_record(), tmp_path)
    damage(next(tmp_path.glob("*.json")))
    [entry] = store.entries(tmp_path)
    assert entry.status == status and entry.reason


def _edit(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
