"""Command line: python -m autotune search|show|bench|sweep|pull|report. See README.md."""
import argparse
import os
import signal
import subprocess
import sys

from autotune import bench, ops, report, search, store, sweep

DEFAULT_SHAPE = "64,1024,768,768"  # the seed article's headline shape: B, T, C, OC


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m autotune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    find = commands.add_parser("search", help="tune the kernels of one op at one shape and store the winners")
    find.add_argument("--op", choices=sorted(ops.OPS), default=None,
                      help="forward (default), backward (backward_input and backward_weight) or all "
                           "(the default with --model)")
    find.add_argument("--shape", type=ops.Shape.parse, default=DEFAULT_SHAPE, metavar="B,T,C,OC",
                      help=f"llm.c sizes (default {DEFAULT_SHAPE})")
    find.add_argument("--model", choices=sorted(ops.GPT2_WIDTHS), default=None,
                      help="tune every matmul of this GPT-2 size instead of --shape")
    find.add_argument("--batch", type=int, default=4, help="B for --model (default 4)")
    find.add_argument("--seq", type=int, default=1024, help="T for --model (default 1024)")
    find.add_argument("--trials", type=int, default=24,
                      help="trials the study should hold; a rerun resumes and counts earlier ones")
    find.add_argument("--timeout", type=float, default=None, metavar="S", help="stop adding trials after S seconds")
    find.add_argument("--trial-time-limit", type=float, default=search.TRIAL_TIME_LIMIT_S, metavar="S",
                      help="kill a candidate that builds, verifies and times for longer than S seconds "
                           f"(default {search.TRIAL_TIME_LIMIT_S:.0f})")
    find.add_argument("--sampler", choices=sorted(search.SAMPLERS), default="tpe")
    find.add_argument("--storage", default=None, help=f"optuna storage URL (default {search.default_storage()})")
    find.add_argument("--tuned-dir", default=None, help="where winners go (default tuned/ or $AUTOTUNE_TUNED_DIR)")

    show = commands.add_parser("show", help="list the stored winners")
    show.add_argument("--tuned-dir", default=None)

    timing = commands.add_parser("bench", help="time the tuned ops against numpy/BLAS and the naive loop")
    timing.add_argument("--shapes", nargs="+", default=bench.DEFAULT_SHAPES, metavar="B,T,C,OC")
    timing.add_argument("--op", choices=sorted(ops.OPS), default="all")
    timing.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    timing.add_argument("--csv", default="bench.csv", help="where to write the rows (default bench.csv)")
    timing.add_argument("--tuned-dir", default=None)
    timing.add_argument("--keep-blas-env", action="store_true",
                        help=f"keep {' and '.join(bench.BLAS_ENV)} (by default unset in the benchmark process)")

    article = commands.add_parser("sweep", help="the seed article's sweep: naive, tuned and numpy over B, T, C")
    article.add_argument("--full", action="store_true", help="every power-of-two step of the article's ranges")
    article.add_argument("--rounds", type=int, default=3)
    article.add_argument("--csv", default="sweep.csv")
    article.add_argument("--plots", default="sweep", help="PNG prefix (needs the plot extra: matplotlib)")
    article.add_argument("--tuned-dir", default=None)
    article.add_argument("--keep-blas-env", action="store_true")
    article.add_argument("--tune-trials", type=int, default=0, metavar="N",
                         help="first search every kernel of every shape of the grid, N trials each (default 0: "
                              "time what tuned/ holds); workers sharing --storage split these searches")
    article.add_argument("--storage", default=None, help="optuna storage URL for --tune-trials")

    fetch = commands.add_parser("pull", help="store the winners of a shared storage's studies for this machine")
    fetch.add_argument("--storage", required=True, help="optuna storage URL the workers used")
    fetch.add_argument("--tuned-dir", default=None)

    page = commands.add_parser("report", help="an HTML page of the winners, their searches and importances")
    page.add_argument("--out", default="report", help="folder for index.html and its PNGs (default report/)")
    page.add_argument("--storage", default=None, help=f"optuna storage URL (default {search.default_storage()})")
    page.add_argument("--tuned-dir", default=None)

    args = parser.parse_args(argv)
    if getattr(args, "tuned_dir", None):  # the loader reads it from the environment, as user code does
        os.environ["AUTOTUNE_TUNED_DIR"] = str(store.tuned_dir(args.tuned_dir).resolve())
    commands = {"search": run_search, "show": run_show, "bench": run_bench, "sweep": run_sweep, "pull": run_pull,
                "report": run_report}
    return commands[args.command](args)


def run_search(args):
    directory = store.tuned_dir()
    _stop_searches_on_signals()
    shapes = ops.model_shapes(args.model, args.batch, args.seq) if args.model else [args.shape]
    kernels = ops.OPS[args.op or ("all" if args.model else "forward")]
    rows = []
    try:
        for shape in shapes:
            for name in kernels:
                print(f"searching {name} for {shape}: {args.trials} trials, {args.sampler} sampler", file=sys.stderr)
                rows.append(search.search(ops.KERNELS[name], shape, trials=args.trials, timeout=args.timeout,
                                          sampler=args.sampler, storage=args.storage, directory=directory,
                                          time_limit_s=args.trial_time_limit))
    except KeyboardInterrupt:
        print("\ninterrupted: finished trials are kept in the study and tuned/ is unchanged for the unfinished "
              "kernel; run the same command again to resume", file=sys.stderr)
        return 130
    base = rows[0]["baselines"]
    print_table(["kernel", "shape", "M x N x K", "best config", "GF/s", "numpy GF/s", "sgemm GF/s", "x numpy", "x sgemm",
                 "naive GF/s", "trials ok/failed/rejected", "compile s", "search s", "loader runs", "stored"],
                [[r["kernel"], r["shape"], f"{r['M']}x{r['N']}x{r['K']}", r["config_label"], f"{r['gflops']:.1f}",
                  f"{r['baselines']['numpy_gflops']:.1f}", f"{r['baselines']['sgemm_gflops']:.1f}",
                  f"{r['baselines']['numpy_ratio']:.2f}", f"{r['baselines']['sgemm_ratio']:.2f}",
                  f"{r['baselines']['naive_gflops']:.1f}",
                  f"{r['trials']['complete']}/{r['trials']['failed']}/{r['trials']['rejected']}",
                  f"{r['compile_s']:.1f}", f"{r['search_s']:.1f}", r["use"], "yes" if r["stored"] else "kept faster"]
                 for r in rows])
    for r in rows:
        for reason, count in r["trials"]["failures"]:
            print(f"{r['kernel']}: {count} trial(s) failed: {reason}")
    blas = base["blas"]
    print(f"\nMedians of interleaved runs at the winner's thread count. BLAS: {blas['library']} {blas['version']} "
          f"kernel {blas['architecture']}, OPENBLAS_CORETYPE={blas['OPENBLAS_CORETYPE'] or 'unset'}. "
          f"numpy = what a numpy user writes (with bias / accumulation), sgemm = bare np.matmul(out=). "
          f"Winners in {directory}.")
    return 0


def _stop_searches_on_signals():
    """A kill ends a search like Ctrl-C: the running trial is marked failed, the study stays consistent."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)


def _interrupt(signum, frame):
    search.INTERRUPTED.set()
    raise KeyboardInterrupt


def _without_preset_blas(args):
    """numpy picks its OpenBLAS kernel at import: rerun without the preset, or None to go on here."""
    preset = [name for name in bench.BLAS_ENV if name in os.environ]
    if not preset or args.keep_blas_env:
        return None
    env = {k: v for k, v in os.environ.items() if k not in bench.BLAS_ENV}
    print(f"unsetting {', '.join(preset)} for the benchmark process", file=sys.stderr)
    return subprocess.run([sys.executable, "-m", "autotune", *sys.argv[1:]], env=env).returncode


def run_sweep(args):
    rerun = _without_preset_blas(args)
    if rerun is not None:
        return rerun
    shapes = sweep.grid(args.full)
    if args.tune_trials:
        _stop_searches_on_signals()
        try:
            sweep.tune(shapes, args.tune_trials, args.storage,
                       progress=lambda name, shape: print(f"searching {name} for {shape}", file=sys.stderr))
        except KeyboardInterrupt:
            print("\ninterrupted: run the same command again to resume", file=sys.stderr)
            return 130
    rows, plots = sweep.run(shapes, args.rounds, args.csv, args.plots,
                            progress=lambda row: print(f"  {row['op']} {row['shape']}: done", file=sys.stderr))
    print(f"{len(rows)} rows in {args.csv}; plots: {', '.join(plots) or 'none (pip install -e .[plot])'}")
    return 0


def run_bench(args):
    rerun = _without_preset_blas(args)
    if rerun is not None:
        return rerun
    op_names = ("forward", "backward") if args.op == "all" else (args.op,)
    rows, peak, blas = bench.run(args.shapes, op_names, args.rounds, args.csv,
                                 progress=lambda row: print(f"  {row['op']} {row['shape']}: done", file=sys.stderr))
    print_table(["shape", "op", "dispatch", "naive GF/s", "tuned GF/s", "numpy GF/s", "sgemm GF/s", "x numpy",
                 "x sgemm", "x naive", "tuned % peak", "sgemm % peak"],
                [[r["shape"], r["op"], r["dispatch"], r["naive_gflops"], r["tuned_gflops"], r["numpy_gflops"],
                  r["sgemm_gflops"], f"{r['tuned_vs_numpy']:.2f}", f"{r['tuned_vs_sgemm']:.2f}",
                  f"{r['tuned_vs_naive']:.1f}", r["tuned_pct_peak"], r["sgemm_pct_peak"]] for r in rows])
    print(f"\n{rows[0]['threads']} threads for BLAS and the naive loop; tuned kernels run their stored thread count. "
          f"Medians of {args.rounds} interleaved rounds. FMA peak measured now: {peak:.1f} GF/s. "
          f"BLAS: {blas['library']} {blas['version']}, kernel {blas['architecture']}, "
          f"OPENBLAS_CORETYPE={blas['OPENBLAS_CORETYPE'] or 'unset'}. Rows written to {args.csv}.")
    return 0


def run_pull(args):
    records, skipped = search.pull(args.storage)
    print_table(["kernel", "shape", "M x N x K", "best config", "GF/s", "x numpy", "trials ok/failed", "loader runs",
                 "stored"],
                [[r["kernel"], r["shape"], f"{r['M']}x{r['N']}x{r['K']}", r["config_label"], f"{r['gflops']:.1f}",
                  f"{r['baselines']['numpy_ratio']:.2f}", f"{r['trials']['complete']}/{r['trials']['failed']}",
                  r["use"], "yes" if r["stored"] else "kept faster"] for r in records])
    print(f"\n{len(records)} studies pulled into {store.tuned_dir()}; {len(skipped)} skipped (another machine "
          f"fingerprint, template version or search space, or no finished trial)")
    return 0


def run_report(args):
    path = report.write(args.out, args.storage)
    print(f"report written to {path}")
    return 0


def run_show(args):
    directory = store.tuned_dir()
    rows = []
    for entry in store.entries(directory):
        r = entry.record or {}
        base = r.get("baselines", {})
        rows.append([entry.status, r.get("use", "?"), r.get("kernel", "?"), f"{r.get('M', '?')}x{r.get('N', '?')}x{r.get('K', '?')}",
                     r.get("config_label", "?"), _fmt(r.get("gflops")), _fmt(base.get("numpy_ratio"), 2),
                     _fmt(base.get("sgemm_ratio"), 2), r.get("date", "?"), entry.reason or entry.path.name])
    if not rows:
        print(f"no tuned kernels in {directory}")
        return 0
    print_table(["status", "runs", "kernel", "M x N x K", "config", "GF/s", "x numpy", "x sgemm", "date", "file / why"],
                rows)
    return 0


def _fmt(value, digits=1):
    return "?" if value is None else f"{value:.{digits}f}"


def print_table(headers, rows):
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    for line in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
