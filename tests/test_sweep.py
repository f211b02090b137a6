"""The seed article's sweep and the benchmark on a tiny grid: rows, CSV and plots."""
import csv
import math

import optuna

from autotune import store, study as studies, sweep


def test_sweep_on_a_tiny_grid_writes_rows_and_plots(tmp_path):
    shapes = ["2,3,5,5", "1,4,3,3"]
    rows, plots = sweep.run(shapes, rounds=1, csv_path=tmp_path / "sweep.csv", plot_prefix=str(tmp_path / "sweep"),
                            progress=lambda row: None)
    assert [(r["shape"], r["op"]) for r in rows] == [
        ("B=2,T=3,C=5,OC=5", "forward"), ("B=2,T=3,C=5,OC=5", "backward"),
        ("B=1,T=4,C=3,OC=3", "forward"), ("B=1,T=4,C=3,OC=3", "backward")]
    for row in rows:
        assert row["elements"] == {"B=2,T=3,C=5,OC=5": 30, "B=1,T=4,C=3,OC=3": 12}[row["shape"]]
        assert all(row[f"{name} s"] > 0 and math.isfinite(row[f"{name} s"]) for name in sweep.CONTENDERS)
    with open(tmp_path / "sweep.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert [p.rsplit("-", 1)[1] for p in plots] == ["forward.png", "backward.png"]
    assert all((tmp_path / p.rsplit("/", 1)[1]).stat().st_size > 1000 for p in plots)


def test_the_default_grid_is_the_documented_subset():
    assert len(sweep.grid()) == 27 and "64,1024,768,768" in sweep.grid()
    assert len(sweep.grid(full=True)) == 216 and "128,2048,1536,1536" in sweep.grid(full=True)


def test_sweep_tunes_every_kernel_of_its_shapes_in_the_given_storage(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTUNE_TUNED_DIR", str(tmp_path / "tuned"))
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    searched = []
    sweep.tune(["2,3,5,5"], trials=1, storage=storage, progress=lambda name, shape: searched.append(name))
    assert searched == ["forward", "backward_input", "backward_weight"]
    names = optuna.get_all_study_names(studies.open_storage(storage))
    assert sorted(name.split("-M")[0] for name in names) == sorted(searched)
    assert len(store.entries(tmp_path / "tuned")) == 3
