"""The seed article's sweep and the benchmark on tiny shapes: rows, CSV, plots, every contender."""
import csv
import math

import numpy as np
import optuna

from autotune import bench, measure, ops, store, study as studies, sweep
from autotune.ops import Shape


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


def test_the_sweep_summary_gives_the_median_the_worst_and_where_each_choice_came_from():
    rows = [{"op": "forward", "shape": f"B={b}", "tuned / best other": ratio, "tuned / best other high": high,
             "origin": origin, "rounds": rounds}
            for b, ratio, high, origin, rounds in [(1, 1.02, 1.1, "tuned", 3), (2, 0.85, 0.88, "near", 15),
                                                   (3, 0.97, 1.0, "far", 4), (4, 0.8, 0.95, "near", 9)]]
    rows.append({"op": "backward", "shape": "B=1", "tuned / best other": 1.1, "tuned / best other high": 1.2,
                 "origin": "tuned", "rounds": 3})
    assert sweep.summary(rows) == [
        ("forward: tuned / best other median 0.91, worst 0.80 (B=4), 2 of 4 below 0.90 (1 with the whole interval "
         "below); 3-15 rounds a shape; dispatch: 2 near, 1 tuned, 1 far"),
        ("backward: tuned / best other median 1.10, worst 1.10 (B=1), 0 of 1 below 0.90 (0 with the whole interval "
         "below); 3-3 rounds a shape; dispatch: 1 tuned")]


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


def test_bench_times_every_contender_and_names_the_best_other():
    rows, _, _ = bench.run([Shape(1, 4, 3, 5)], ("forward", "backward", "step"), rounds=1,
                           progress=lambda row: None)
    forward, backward, step = rows
    assert step["op"] == "step" and step["flops"] == forward["flops"] + backward["flops"]
    assert step["dispatch"].count("+") == forward["dispatch"].count("+") + backward["dispatch"].count("+") + 1
    for row in rows:
        assert {"numpy", "numpy 2-D", "BLAS beta"} <= {name for name in bench.OTHERS if f"{name} s" in row}
        assert row["best other"] in bench.OTHERS and row["naive s"] > 0 and row["sgemm s"] > 0
        assert 0 < row["tuned / best other low"] <= row["tuned / best other"] <= row["tuned / best other high"]


def test_the_best_other_is_the_one_tuned_is_least_ahead_of_round_by_round():
    # numpy has the fastest median time, yet round by round tuned ran 2x ahead of it in two of
    # three rounds, and 1.25x ahead of BLAS beta in every round: BLAS beta is the best other.
    timing = lambda *samples: measure.Timing.of(samples)
    timings = {"tuned": timing(1.0, 2.0, 4.0), "numpy": timing(2.0, 4.0, 1.0), "numpy 2-D": timing(3.0, 6.0, 12.0),
               "BLAS beta": timing(1.25, 2.5, 5.0)}
    paired = bench.versus(timings)
    assert timings["numpy"].median < timings["BLAS beta"].median
    assert bench.best_other(paired) == "BLAS beta" and paired["BLAS beta"].median == 1.25


def test_a_row_is_precise_when_tuned_over_its_best_other_reads_a_narrow_interval():
    timing = lambda *samples: measure.Timing.of(samples)
    steady = {"tuned": timing(1.0, 1.0, 1.0, 1.0), "numpy": timing(1.2, 1.3, 1.2, 1.3),
              "BLAS beta": timing(1.1, 1.1, 1.1, 1.1)}
    noisy = {**steady, "tuned": timing(1.0, 3.0, 1.0, 3.0)}  # tuned / BLAS beta: 1.1, 0.37, 1.1, 0.37
    assert bench.precise(0.1)(steady)
    assert not bench.precise(0.1)(noisy) and bench.precise(10.0)(noisy)


def test_bench_adds_rounds_to_a_row_until_precise_but_not_to_the_naive_loop(monkeypatch):
    # A width below zero is never reached: rounds are added up to the limit, the naive loop keeps
    # its first rounds' samples only. (Random noise here would stop early whenever two rounds agree.)
    monkeypatch.setattr(measure, "BURST_S", 0.001)  # a few calls a burst: a tiny shape's rounds, quickly
    monkeypatch.setattr(measure, "BLAS_SETTLE_S", 0.0)
    timings = bench.time_op("forward", Shape(1, 4, 3, 5), rounds=2, max_rounds=7, width=-1.0)
    assert timings["tuned"].rounds == timings["numpy"].rounds == 7 and timings["naive"].rounds == 2
    assert bench.versus(timings)["naive"].rounds == 2  # paired over the rounds both ran
    steady = bench.time_op("forward", Shape(1, 4, 3, 5), rounds=2, max_rounds=7, width=1e9)
    assert steady["tuned"].rounds == 2  # precise enough after the first rounds: nothing added


def test_a_step_contender_runs_the_forward_then_the_backward():
    a = bench.op_arrays(Shape(2, 3, 5, 7))
    before = {name: a[name].astype(np.float64) for name in ("dinp", "dweight", "dbias")}
    inp, weight, dout = (a[name].astype(np.float64) for name in ("inp", "weight", "dout"))
    bench.contenders("step", a)["tuned"]()
    np.testing.assert_allclose(a["out"], inp @ weight.T + a["bias"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a["dinp"], before["dinp"] + dout @ weight, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a["dweight"], before["dweight"] + dout.reshape(-1, 7).T @ inp.reshape(-1, 5),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a["dbias"], before["dbias"] + dout.sum(axis=(0, 1)), rtol=1e-4, atol=1e-4)


def test_bench_times_an_op_without_bias_as_the_lm_head_runs():
    for op in ("forward", "backward"):
        timings = bench.time_op(op, Shape(1, 4, 3, 5), rounds=1, bias=False, skip_naive=True)
        assert {"tuned", "numpy", "numpy 2-D", "BLAS beta"} <= set(timings) and "naive" not in timings


def test_bench_of_the_njit_entry_points_times_both_formulations():
    results = bench.njit_calls([Shape(1, 4, 3, 5)], rounds=1, progress=lambda row: None)
    assert sorted(results) == [("B=1,T=4,C=3,OC=5", "backward"), ("B=1,T=4,C=3,OC=5", "forward")]
    assert all(set(t) == {"tuned", "np.dot"} and t["tuned"].median > 0 for t in results.values())


def test_a_gpt2_step_counts_every_matmul_and_the_lm_head():
    matmuls = ops.model_matmuls("gpt2", 4, 1024)
    assert [(m.name, m.count, m.bias) for m in matmuls][-1] == ("lm head", 1, False)
    assert matmuls[-1].shape == Shape(4, 1024, 768, 50304) and sum(m.count for m in matmuls) == 49
