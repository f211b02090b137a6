"""One HTML page from the stored winners and their studies: speed against BLAS and numpy,
% of the FMA peak, each study's search history and optuna's parameter importances.

Figures are matplotlib PNGs beside the page (the `plot` extra); the page is templates/report.html.jinja.
"""
import datetime
from pathlib import Path

import optuna

from autotune import bench, machine, render, store, study


def write(out_dir, storage=None, directory=None):
    """Write out_dir/index.html and its figures; returns the page's path."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = store.entries(store.tuned_dir(directory))
    winners = [e.record for e in entries if e.status == "ok"]
    peak = bench.fma_peak(machine.max_threads())
    rows = [_row(r, peak) for r in sorted(winners, key=lambda r: (r.shape, r.problem.kernel))]
    known = _studies(winners, storage)
    figures = {"speed": _speed_figure(plt, rows, out / "speed.png")} if rows else {}
    for row in rows:
        found = known.get(row["study"])
        if found is not None:
            row["history"] = _history_figure(plt, found, row, out / f"history-{row['key']}.png")
            row["importances"] = _importances(found)
    page = render.environment(autoescape=True).get_template("report.html.jinja").render(
        rows=rows, figures=figures, peak=peak, fingerprint=machine.fingerprint(),
        blas=winners[0].blas if winners else None,
        others=[e for e in entries if e.status != "ok"], storage=storage or study.default_storage(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    path = out / "index.html"
    path.write_text(page)
    return path


def _row(r, peak):
    p = r.problem
    return {
        "key": f"{p.kernel}-{p.M}x{p.N}x{p.K}", "kernel": p.kernel, "shape": r.shape, "size": f"{p.M} x {p.N} x {p.K}",
        "flops": p.flops, "config": r.config.label(), "use": r.use, "gflops": r.gflops,
        **{f"{name}_gflops": p.flops / seconds / 1e9 for name, seconds in r.baselines.items()},
        **{f"x_{name}": r.speedup_over(name) for name in r.baselines}, "vs_blas": r.vs_blas,
        "pct_peak": 100 * r.gflops / peak, "threads": r.config.threads, "trials": r.trials, "date": r.date,
        "study": r.trials.get("study"), "failures": r.trials.get("failures", []), "decision": r.decision,
        "history": None, "importances": {},
    }


def _studies(winners, storage):
    """The winners' studies that the storage holds, by name."""
    shared = study.open_storage(storage)
    names = set(optuna.get_all_study_names(shared))
    return {name: optuna.load_study(study_name=name, storage=shared)
            for name in {r.trials.get("study") for r in winners} & names}


def _speed_figure(plt, rows, path):
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 4.5))
    width, xs = 0.27, range(len(rows))
    for offset, (name, key) in zip((-width, 0, width), (("tuned", "gflops"), ("BLAS with beta (same threads)", "blas_gflops"),
                                                        ("numpy on 2-D arrays", "numpy_gflops"))):
        ax.bar([x + offset for x in xs], [r[key] for r in rows], width, label=name)
    ax.set_xticks(list(xs), [f"{r['kernel']}\n{r['size']}" for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set(ylabel="GF/s (median)", title="Stored winners against BLAS and numpy")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, never over them
    return _save(plt, fig, path)


def _history_figure(plt, found, row, path):
    """Each evaluated trial's speed relative to the study's anchor config (anchor time / trial time,
    drift-free) and the best so far, against trial number."""
    done = [t for t in found.trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t.number for t in found.trials if t.state == optuna.trial.TrialState.FAIL]
    best, curve = 0.0, []
    for t in done:
        best = max(best, 1 / t.value)
        curve.append(best)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([t.number for t in done], [1 / t.value for t in done], "o", alpha=0.5, label="trial")
    ax.step([t.number for t in done], curve, where="post", label="best so far")
    if failed:
        ax.plot(failed, [0] * len(failed), "x", color="red", label="failed")
    ax.set(xlabel="trial number (rejected configs are numbered too)", ylabel="speed / the anchor config's",
           title=f"{row['kernel']} {row['size']}: {len(done)} timed, {len(failed)} failed")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _importances(found):
    complete = [t for t in found.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 4 or len({tuple(sorted(t.params.items())) for t in complete}) < 4:
        return {}
    return {name: round(value, 3) for name, value in optuna.importance.get_param_importances(found).items()}


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

