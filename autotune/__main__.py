"""Command line: python -m autotune search|show|bench|sweep|pull|report. See README.md."""
import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from autotune import bench, machine, measure, ops, report, search, store, study, sweep

DEFAULT_SHAPE = "64,1024,768,768"  # the seed article's headline shape: B, T, C, OC
SHAPE_EXAMPLE = "e.g. 64,1024,768,768"


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every default in --help, except where the help text says it (default None)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line: what is wrong and what to type instead."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def shape(text):
    try:
        return ops.Shape.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be a positive {'integer' if kind is int else 'number'}, got {text!r}")
        return value
    return parse


def main(argv=None):
    parser = Parser(prog="python -m autotune", description=__doc__, formatter_class=Help)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    defaults = {"formatter_class": Help}

    search_parser = commands.add_parser("search", help="tune the kernels of one op at one shape and store the winners",
                                        **defaults)
    search_parser.add_argument("--op", choices=sorted(ops.OPS), default=None,
                               help="forward, backward (backward_input and backward_weight) or all "
                                    "(default: forward; all with --model)")
    search_parser.add_argument("--shape", type=shape, default=DEFAULT_SHAPE, metavar="B,T,C,OC", help="llm.c sizes")
    search_parser.add_argument("--model", choices=sorted(ops.GPT2_WIDTHS), default=None,
                               help="tune every matmul of one GPT-2 training step instead of --shape (default: none)")
    search_parser.add_argument("--batch", type=positive(int), default=4, help="B for --model")
    search_parser.add_argument("--seq", type=positive(int), default=1024, help="T for --model")
    search_parser.add_argument("--trials", type=positive(int), default=24,
                               help="evaluated trials the study should hold; a rerun resumes and counts earlier ones")
    search_parser.add_argument("--timeout", type=positive(float), default=None, metavar="S",
                               help="stop adding trials after S seconds; the final comparison follows (default: no limit)")
    search_parser.add_argument("--trial-time-limit", type=positive(float), default=search.TRIAL_TIME_LIMIT_S,
                               metavar="S", help="kill a candidate that builds, verifies and times for longer")
    search_parser.add_argument("--sampler", choices=sorted(search.SAMPLERS), default="tpe", help="optuna sampler")
    search_parser.add_argument("--storage", default=study.default_storage(), metavar="URL", help="optuna storage")
    search_parser.add_argument("--tuned-dir", default=str(store.tuned_dir()), metavar="DIR",
                               help="where winners go ($AUTOTUNE_TUNED_DIR sets the default)")
    _keep_blas_env_option(search_parser)

    show_parser = commands.add_parser("show", help="list the stored winners", **defaults)
    show_parser.add_argument("--tuned-dir", default=str(store.tuned_dir()), metavar="DIR", help="folder of winners")

    bench_parser = commands.add_parser("bench", help="time the tuned ops against numpy, BLAS, PyTorch and the naive loop",
                                       **defaults)
    bench_parser.add_argument("--shapes", nargs="+", type=shape, default=[shape(s) for s in bench.DEFAULT_SHAPES],
                              metavar="B,T,C,OC", help="shapes to time")
    bench_parser.add_argument("--model", choices=sorted(ops.GPT2_WIDTHS), default=None,
                              help="time every matmul of one GPT-2 training step and their sum, instead of --shapes (default: none)")
    bench_parser.add_argument("--batch", type=positive(int), default=4, help="B for --model")
    bench_parser.add_argument("--seq", type=positive(int), default=1024, help="T for --model")
    bench_parser.add_argument("--njit", action="store_true",
                              help="time the ops called in a loop inside @njit code (tuned.njit) against numba's "
                                   "np.dot there, instead of the Python contenders")
    bench_parser.add_argument("--op", choices=["all", *bench.OP_KERNELS], default="all",
                              help="which op to time; all: forward, backward and step (the forward, then the backward)")
    bench_parser.add_argument("--rounds", type=positive(int), default=5, help="interleaved rounds; medians are reported")
    _max_rounds_option(bench_parser)
    bench_parser.add_argument("--csv", default="bench.csv", help="where to write the rows")
    bench_parser.add_argument("--tuned-dir", default=str(store.tuned_dir()), metavar="DIR", help="folder of winners")
    _keep_blas_env_option(bench_parser)

    sweep_parser = commands.add_parser("sweep", help="the seed article's sweep: naive, tuned and numpy over B, T, C",
                                       **defaults)
    sweep_parser.add_argument("--full", action="store_true", help="every power-of-two step of the article's ranges")
    sweep_parser.add_argument("--rounds", type=positive(int), default=3, help="interleaved rounds")
    _max_rounds_option(sweep_parser)
    sweep_parser.add_argument("--csv", default="sweep.csv", help="where to write the rows")
    sweep_parser.add_argument("--plots", default="sweep", help="PNG prefix (needs the plot extra: matplotlib)")
    sweep_parser.add_argument("--tuned-dir", default=str(store.tuned_dir()), metavar="DIR", help="folder of winners")
    _keep_blas_env_option(sweep_parser)
    sweep_parser.add_argument("--tune-trials", type=int, default=0, metavar="N",
                              help="first search every kernel of every shape of the grid, N trials each (0: time "
                                   "what tuned/ holds); workers sharing --storage split these searches")
    sweep_parser.add_argument("--storage", default=study.default_storage(), metavar="URL",
                              help="optuna storage for --tune-trials")

    pull_parser = commands.add_parser("pull", help="store the winners of a shared storage's studies for this machine",
                                      **defaults)
    pull_parser.add_argument("--storage", required=True, metavar="URL", help="optuna storage the workers used")
    pull_parser.add_argument("--tuned-dir", default=str(store.tuned_dir()), metavar="DIR", help="where winners go")
    _keep_blas_env_option(pull_parser)

    report_parser = commands.add_parser("report", help="an HTML page of the winners, their searches and importances",
                                        **defaults)
    report_parser.add_argument("--out", default="report", help="folder for index.html and its PNGs")
    report_parser.add_argument("--storage", default=study.default_storage(), metavar="URL", help="optuna storage")
    report_parser.add_argument("--tuned-dir", default=str(store.tuned_dir()), metavar="DIR", help="folder of winners")

    args = parser.parse_args(_values_that_look_like_options(argv if argv is not None else sys.argv[1:]))
    # The loader reads the folder from the environment, as user code does.
    os.environ["AUTOTUNE_TUNED_DIR"] = str(Path(args.tuned_dir).resolve())
    run = {"search": run_search, "show": run_show, "bench": run_bench, "sweep": run_sweep, "pull": run_pull,
           "report": run_report}[args.command]
    try:
        status = run(args)
        sys.stdout.flush()
        return status
    except UsageError as error:
        print(f"python -m autotune {args.command}: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader left early (`show | head`): no traceback, and no second error when Python
        # flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


class UsageError(Exception):
    """A mistake on the command line found after parsing: printed as one line, exit status 2."""


def _values_that_look_like_options(argv):
    """`--shape -1,2,3,4` is a value, not an option: join it as `--shape=-1,2,3,4` so the shape check
    explains what is wrong with it."""
    joined, i = [], 0
    while i < len(argv):
        if argv[i] in ("--shape", "--shapes") and i + 1 < len(argv) and re.fullmatch(r"-[\d,.-]+", argv[i + 1]):
            joined.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    return joined


def _writable_tuned_dir(args):
    try:
        store.check_writable(args.tuned_dir)
    except OSError as error:
        raise UsageError(str(error)) from None
    return Path(args.tuned_dir)


def run_search(args):
    rerun = _without_preset_blas(args)
    if rerun is not None:
        return rerun
    directory = _writable_tuned_dir(args)  # before the search, not after it
    _stop_searches_on_signals()
    matmuls = ops.model_matmuls(args.model, args.batch, args.seq) if args.model else [ops.ModelMatmul("", args.shape, 1)]
    kernels = ops.OPS[args.op or ("all" if args.model else "forward")]
    outcomes, agreed = [], []
    try:
        for matmul in matmuls:
            for name in kernels:
                print(f"searching {name} for {matmul.shape}: {args.trials} trials, {args.sampler} sampler",
                      file=sys.stderr)
                outcomes.append(search.search(ops.KERNELS[name], matmul.shape, trials=args.trials,
                                              timeout=args.timeout, sampler=args.sampler, storage=args.storage,
                                              directory=directory, time_limit_s=args.trial_time_limit))
            if set(ops.OPS["backward"]) <= set(kernels):
                print(f"timing the whole backward for {matmul.shape}", file=sys.stderr)
                agreed.append((f"whole backward at {matmul.shape}", search.agree_backward(matmul.shape, directory)))
            if set(ops.OPS["all"]) <= set(kernels):
                print(f"timing the step (forward, then backward) for {matmul.shape}", file=sys.stderr)
                agreed.append((f"step at {matmul.shape}", search.agree_step(matmul.shape, directory)))
    except KeyboardInterrupt:
        print("\ninterrupted: finished trials are kept in the study and tuned/ is unchanged for the unfinished "
              "kernel; run the same command again to resume", file=sys.stderr)
        return 130
    print_outcomes(outcomes, directory)
    for what, sentence in agreed:
        print(f"{what}: {sentence}")
    return 0


def print_outcomes(outcomes, directory):
    """The table of a search or pull (narrow: `show` has every detail), then each best config and decision.
    GF/s and the ratios are the best config's; "tuned/" says whether it was stored, and what the
    loader runs for the size now (the stored winner's kernel or a fallback), which a kept winner's
    own timings or the whole backward's may have decided."""
    runs = {e.record.problem: e.record.use for e in store.entries(directory) if e.status == "ok"}
    print_table(["kernel", "M x N x K", "GF/s", "x BLAS", "x numpy", "x torch", "trials timed/failed", "tuned/"],
                [[o.record.problem.kernel, f"{o.record.problem.M}x{o.record.problem.N}x{o.record.problem.K}",
                  f"{o.record.gflops:.1f}", f"{o.record.vs_blas[0]:.2f}", f"{o.record.speedup_over('numpy'):.2f}",
                  _over_torch(o.record),
                  f"{o.record.trials['complete']}/{o.record.trials['failed']}",
                  ("stored" if o.stored else "kept") + f", runs {runs.get(o.record.problem, o.record.use)}"]
                 for o in outcomes])
    for o in outcomes:
        print(f"{o.record.problem.kernel}: best config {o.record.config.label()}")
        print(f"  {'stored' if o.stored else 'not stored'}: {o.decision}")
        for reason, count in o.record.trials["failures"]:
            print(f"  {count} trial(s) failed: {reason}")
        if o.record.trials.get("disturbed"):
            print(f"  {o.record.trials['disturbed']} trial(s) timed again: the anchor ran slow, something else was running")
        if o.record.trials.get("new_pace"):
            print(f"  {o.record.trials['new_pace']} trial(s) scored while the anchor stayed slow: the machine was loaded "
                  f"for a while, and this search tuned for it as it was; search again on a quiet machine for a record that holds")
    if outcomes:
        blas = outcomes[0].record.blas
        print(f"\nMedians of interleaved rounds, each kernel on its own thread count, BLAS on {machine.max_threads()}. x BLAS: paired speedup over BLAS "
              f"with beta = 1 ({'; '.join(blas['libraries'])}; OPENBLAS_CORETYPE {blas['OPENBLAS_CORETYPE']}); "
              f"x numpy: over numpy as a user writes it on 2-D arrays; x torch: over PyTorch's addmm, where "
              f"installed. Winners in {directory}; "
              f"`python -m autotune show` lists them.")


def _stop_searches_on_signals():
    """A kill ends a search like Ctrl-C: the running trial is marked failed, the study stays consistent."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, search.interrupt)


def _or_dash(value):
    return "-" if value != value else value  # NaN: not measured


def _max_rounds_option(parser):
    parser.add_argument("--max-rounds", type=positive(int), default=bench.MAX_ROUNDS, metavar="N",
                        help=f"add rounds to a row, up to N in all, until tuned / best other's interval is "
                             f"{bench.WIDTH * 100:.0f}%% narrow (high / low); N = --rounds adds none")


def _keep_blas_env_option(parser):
    parser.add_argument("--keep-blas-env", action="store_true",
                        help=f"keep {' and '.join(bench.BLAS_ENV)}: compare against the OpenBLAS kernel they force "
                             f"(unset in this command's process otherwise, so that BLAS runs its best kernel)")


def _without_preset_blas(args):
    """numpy picks its OpenBLAS kernel at import: rerun without the preset, or None to go on here.
    A search decides against BLAS too: a forced older kernel would make a kernel look ahead of the
    BLAS a user gets without the preset."""
    preset = [name for name in bench.BLAS_ENV if name in os.environ]
    if not preset or args.keep_blas_env:
        return None
    env = {k: v for k, v in os.environ.items() if k not in bench.BLAS_ENV}
    print(f"unsetting {', '.join(preset)} for this command's process (--keep-blas-env keeps them)", file=sys.stderr)
    with subprocess.Popen([sys.executable, "-m", "autotune", *sys.argv[1:]], env=env) as child:
        try:
            return child.wait()
        except KeyboardInterrupt:  # the child got it too, and finishes as it says
            return child.wait()


def run_sweep(args):
    rerun = _without_preset_blas(args)
    if rerun is not None:
        return rerun
    shapes = sweep.grid(args.full)
    if args.tune_trials:
        _writable_tuned_dir(args)
        _stop_searches_on_signals()
        try:
            sweep.tune(shapes, args.tune_trials, args.storage,
                       progress=lambda name, shape: print(f"searching {name} for {shape}", file=sys.stderr))
        except KeyboardInterrupt:
            print("\ninterrupted: run the same command again to resume", file=sys.stderr)
            return 130
    rows, plots = sweep.run(shapes, args.rounds, args.csv, args.plots, max_rounds=args.max_rounds,
                            progress=lambda row: print(f"  {row['op']} {row['shape']}: done", file=sys.stderr))
    print("\n".join(sweep.summary(rows)))
    print(f"{len(rows)} rows in {args.csv}; plots: {', '.join(plots) or 'none (pip install -e .[plot])'}")
    return 0


def run_bench(args):
    rerun = _without_preset_blas(args)
    if rerun is not None:
        return rerun
    threads = machine.max_threads()
    progress = lambda r: print(f"  {r['op']} {r['shape']}: done", flush=True, file=sys.stderr)
    if args.njit:
        return _bench_njit(args, progress)
    if args.model:
        rows, summary, peak, torch = bench.model_step(args.model, args.batch, args.seq, args.rounds, progress,
                                                          max_rounds=args.max_rounds)
    else:
        op_names = tuple(bench.OP_KERNELS) if args.op == "all" else (args.op,)
        rows, peak, torch = bench.run(args.shapes, op_names, args.rounds, progress=progress, max_rounds=args.max_rounds)
    names = [n for n in ("naive", "tuned", "numpy", "numpy 2-D", "BLAS beta", "torch", "sgemm") if f"{n} GF/s" in rows[0]]
    print_table([*(["matmul"] if args.model else []), "B,T,C,OC", "op", "dispatch", *names, "best other", "x best",
                 "rounds", "% peak", "entry us"],
                [[*([r["matmul"]] if args.model else []), _short(r["shape"]), r["op"], r["dispatch"],
                  *[r.get(f"{n} GF/s", "-") for n in names], r["best other"], _versus_best(r), r["rounds"],
                  r["tuned % peak"], _or_dash(r["entry point us"])] for r in rows])
    if args.model:
        best = max((n for n in bench.OTHERS if n in summary), key=lambda n: summary[n]["gflops"])
        print(f"\nOne {args.model} training step (B={args.batch}, T={args.seq}): every matmul, forward and backward")
        print_table(["contender", "seconds", "GF/s", "tuned is x faster"],
                    [[n, f"{s['seconds']:.3f}", f"{s['gflops']:.1f}", f"{s['seconds'] / summary['tuned']['seconds']:.2f}"]
                     for n, s in summary.items()])
        print(f"best other: {best}")
    blas = measure.blas_info()
    print(f"\nGF/s, medians of {args.rounds} to {max(args.rounds, args.max_rounds)} interleaved rounds (rounds: how many a row "
          f"took; rounds are added until x best's interval is {bench.WIDTH:.0%} narrow), {threads} threads for every contender (tuned kernels "
          f"run their stored thread count). FMA peak: {peak:.1f} GF/s (the best measured on this machine kind). BLAS: {'; '.join(blas['libraries'])}; "
          f"OPENBLAS_CORETYPE {blas['OPENBLAS_CORETYPE']}. torch: {bench.torch_info(torch)}. "
          f"Target: {machine.target_label()}. dispatch per kernel: tuned winner, blas, kin (tuned at this size on this CPU "
          f"and target, other feature flags), near (the nearest tuned size's choice) or far (BLAS with beta: nothing tuned near); beside: a parallel kernel giving way to the BLAS formulation "
          f"the other backward kernel runs on OpenBLAS's own threads (they spin after a call and slow a parallel kernel "
          f"started then); blas runs on the kernels' threads above 4 MFLOP. entry us: microseconds per call that the entry point adds to "
          f"the kernels it dispatches (validation, reshapes, dispatch), tuned minus the kernels called directly, where a "
          f"call takes under {bench.ENTRY_RESOLVED_S * 1e3:.0f} ms (above, the difference is noise). "
          f"x best: the median over rounds of the best other's time over tuned's in the same round, with its 95% "
          f"bootstrap interval; best other: of {', '.join(bench.OTHERS)}, the one tuned is least ahead of. "
          f"Rows written to {args.csv}.")
    bench.write_csv(rows, args.csv)
    return 0


def _versus_best(row):
    """A bench row's tuned / best other: paired median (interval)."""
    key = "tuned / best other"
    return f"{row[key]:.2f} ({row[key + ' low']:.2f}-{row[key + ' high']:.2f})"


def _bench_njit(args, progress):
    results = bench.njit_calls(args.shapes, args.rounds, progress=progress)
    rows = []
    for (shape, op), t in results.items():
        paired = measure.speedup(t["tuned"], t["np.dot"])
        rows.append([_short(shape), op, f"{t['tuned'].median * 1e6:.1f}", f"{t['np.dot'].median * 1e6:.1f}",
                     f"{paired.median:.2f} ({paired.low:.2f}-{paired.high:.2f})"])
    print_table(["B,T,C,OC", "op", "tuned us/call", "np.dot us/call", "tuned x faster (95% interval)"], rows)
    print(f"\nEach op called 200 times in a loop inside @njit code: tuned.njit's entry points against numba's "
          f"np.dot into preallocated arrays plus the bias add or accumulation; medians of {args.rounds} interleaved "
          f"rounds, {machine.max_threads()} threads. Target: {machine.target_label()}.")
    return 0


def _short(shape_text):
    return ",".join(part.split("=")[1] for part in shape_text.split(","))


def run_pull(args):
    rerun = _without_preset_blas(args)
    if rerun is not None:
        return rerun
    directory = _writable_tuned_dir(args)
    outcomes, skipped = search.pull(args.storage, directory)
    print_outcomes(outcomes, directory)
    for p in {o.record.problem for o in outcomes if o.record.problem.kernel == "backward_input"}:
        sentence = search.agree_backward(ops.Shape(1, p.M, p.N, p.K), directory)  # the backward's sizes need only B*T
        if sentence:
            print(f"whole backward at B*T={p.M}, C={p.N}, OC={p.K}: {sentence}")
        sentence = search.agree_step(ops.Shape(1, p.M, p.N, p.K), directory)
        if sentence:
            print(f"step at B*T={p.M}, C={p.N}, OC={p.K}: {sentence}")
    print(f"\n{len(outcomes)} studies pulled into {directory}; {len(skipped)} skipped (another machine "
          f"fingerprint, template version or search space, or no finished trial)")
    return 0


def run_report(args):
    path = report.write(args.out, args.storage)
    print(f"report written to {path}")
    return 0


def run_show(args):
    directory = Path(args.tuned_dir)
    if not directory.is_dir():
        raise UsageError(f"the folder {directory} does not exist (winners are stored by `python -m autotune search`)")
    rows = []
    for entry in store.entries(directory):
        r = entry.record
        if r is None:
            rows.append([entry.status, "?", "?", "?", "?", "?", "?", "?", "?", f"{entry.path.name}: {entry.reason}"])
            continue
        rows.append([entry.status, r.use, r.problem.kernel, f"{r.problem.M}x{r.problem.N}x{r.problem.K}",
                     r.config.label(), f"{r.gflops:.1f}", f"{r.vs_blas[0]:.2f}", f"{r.speedup_over('numpy'):.2f}",
                     _over_torch(r), entry.reason or "; ".join(filter(None, [r.date, r.revised]))])
    if not rows:
        print(f"no tuned kernels in {directory}")
        return 0
    print_table(["status", "runs", "kernel", "M x N x K", "config", "GF/s", "x BLAS", "x numpy", "x torch",
                  "date (and why its use was revised) / why not used"], rows)
    return 0


def _over_torch(record):
    """The kernel's speedup over PyTorch by medians, or "-" where the search ran without it."""
    return f"{record.speedup_over('torch'):.2f}" if "torch" in record.baselines else "-"


def print_table(headers, rows):
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    for line in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
