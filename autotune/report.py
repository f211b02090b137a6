"""One HTML page from the stored winners and their studies: speed against BLAS and the naive loop,
% of the FMA peak, each study's search history and optuna's parameter importances.

Figures are matplotlib PNGs beside the page (the `plot` extra); the page is templates/report.html.jinja.
"""
import datetime
from pathlib import Path

import jinja2
import optuna

from autotune import bench, machine, render, search, store


def write(out_dir, storage=None, directory=None):
    """Write out_dir/index.html and its figures; returns the page's path."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = store.entries(store.tuned_dir(directory))
    winners = [e.record for e in entries if e.status == "ok"]
    peak = bench.fma_peak(machine.max_threads())
    rows = [_row(r, peak) for r in sorted(winners, key=lambda r: (r["shape"], r["kernel"]))]
    studies = _studies(winners, storage)
    figures = {"speed": _speed_figure(plt, rows, out / "speed.png")} if rows else {}
    for row in rows:
        study = studies.get(row["study"])
        if study is not None:
            row["history"] = _history_figure(plt, study, row, out / f"history-{row['key']}.png")
            row["importances"] = _importances(study)
    page = _environment().get_template("report.html.jinja").render(
        rows=rows, figures=figures, peak=peak, fingerprint=machine.fingerprint(),
        blas=winners[0]["baselines"]["blas"] if winners else None,
        others=[e for e in entries if e.status != "ok"], storage=storage or search.default_storage(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    path = out / "index.html"
    path.write_text(page)
    return path


def _row(r, peak):
    base = r["baselines"]
    return {
        "key": f"{r['kernel']}-{r['M']}x{r['N']}x{r['K']}", "kernel": r["kernel"], "shape": r["shape"],
        "size": f"{r['M']} x {r['N']} x {r['K']}", "flops": 2 * r["M"] * r["N"] * r["K"],
        "config": r["config_label"], "use": r.get("use", "kernel"),
        "gflops": r["gflops"], "numpy_gflops": base["numpy_gflops"], "sgemm_gflops": base["sgemm_gflops"],
        "naive_gflops": base["naive_gflops"], "x_numpy": base["numpy_ratio"], "x_sgemm": base["sgemm_ratio"],
        "x_naive": r["gflops"] / base["naive_gflops"], "pct_peak": 100 * r["gflops"] / peak,
        "threads": base["threads"], "trials": r["trials"], "date": r["date"], "study": r["trials"].get("study"),
        "failures": r["trials"].get("failures", []), "history": None, "importances": {},
    }


def _studies(winners, storage):
    """The winners' studies that the storage holds, by name."""
    shared = search.open_storage(storage)
    known = set(optuna.get_all_study_names(shared))
    return {name: optuna.load_study(study_name=name, storage=shared)
            for name in {r["trials"].get("study") for r in winners} & known}


def _speed_figure(plt, rows, path):
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 4.5))
    width, xs = 0.27, range(len(rows))
    for offset, (name, key) in zip((-width, 0, width), (("tuned", "gflops"), ("numpy (same threads)", "numpy_gflops"),
                                                        ("naive llm.c loop", "naive_gflops"))):
        ax.bar([x + offset for x in xs], [r[key] for r in rows], width, label=name)
    ax.set_xticks(list(xs), [f"{r['kernel']}\n{r['size']}" for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set(yscale="log", ylabel="GF/s (median)", title="Stored winners against numpy/BLAS and the naive loop")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _history_figure(plt, study, row, path):
    """GF/s of each evaluated trial and the best so far, against trial number."""
    flops = row["flops"]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t.number for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    best, curve = 0.0, []
    for t in done:
        best = max(best, flops / t.value / 1e9)
        curve.append(best)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([t.number for t in done], [flops / t.value / 1e9 for t in done], "o", alpha=0.5, label="trial")
    ax.step([t.number for t in done], curve, where="post", label="best so far")
    if failed:
        ax.plot(failed, [0] * len(failed), "x", color="red", label="failed")
    ax.set(xlabel="trial number (rejected configs are numbered too)", ylabel="GF/s",
           title=f"{row['kernel']} {row['size']}: {len(done)} timed, {len(failed)} failed")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _importances(study):
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 4 or len({tuple(sorted(t.params.items())) for t in complete}) < 4:
        return {}
    return {name: round(value, 3) for name, value in optuna.importance.get_param_importances(study).items()}


def _save(plt, fig, path):
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path.name


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("report needs matplotlib: pip install -e '.[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _environment():
    return jinja2.Environment(loader=jinja2.FileSystemLoader(render.TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)

