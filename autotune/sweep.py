"""The seed article's sweep on this machine: forward and backward over a grid of B, T and C = OC,
timing the naive loop, the tuned op (as `import tuned` dispatches it) and numpy/BLAS, with
log-log plots of time against tensor elements like the article's Fig. 1 and 2.
"""
import collections
import itertools
import statistics

from autotune import bench, measure, ops, search

# The article's ranges: B 4..128, T 64..2048, C = OC 48..1536. The default subset (27 shapes) takes
# three values of each up to the headline shape, so it runs in minutes; --full takes every
# power-of-two step of the article's ranges (216 shapes, hours, up to 10 GB of arrays).
SUBSET = {"B": (4, 16, 64), "T": (64, 256, 1024), "C": (48, 192, 768)}
NAIVE_MAX_GFLOP = 200  # past this the naive loop takes minutes per call and is not timed
FULL = {"B": (4, 8, 16, 32, 64, 128), "T": (64, 128, 256, 512, 1024, 2048),
        "C": (48, 96, 192, 384, 768, 1536)}
CONTENDERS = ("naive", "tuned", "numpy", "BLAS beta")


def grid(full=False):
    axes = FULL if full else SUBSET
    return [f"{B},{T},{C},{C}" for B, T, C in itertools.product(axes["B"], axes["T"], axes["C"])]


def tune(shapes, trials, storage=None, progress=print):
    """Search every kernel of every shape first. Workers running this with one shared storage join
    the same studies, which stop at `trials` trials in all, so they split the work."""
    for shape in shapes:
        for name in ops.OPS["all"]:
            progress(name, shape)
            search.search(ops.KERNELS[name], ops.Shape.parse(shape), trials=trials, storage=storage)


def run(shapes, rounds=3, csv_path="sweep.csv", plot_prefix="sweep", progress=print, max_rounds=None):
    """bench's rows (`rounds` rounds a row, more up to `max_rounds` where imprecise) and plots."""
    rows, _, _ = bench.run([ops.Shape.parse(s) for s in shapes], ("forward", "backward"), rounds,
                           progress=progress, naive_max_gflop=NAIVE_MAX_GFLOP, max_rounds=max_rounds)
    for row in rows:
        B, T, C, _ = (int(part.split("=")[1]) for part in row["shape"].split(","))
        row["elements"] = B * T * C  # the article's x axis: elements of the input tensor
    bench.write_csv(rows, csv_path)
    return rows, plot(rows, plot_prefix, measure.blas_info())


def plot(rows, prefix, blas):
    """One PNG per op: seconds against elements, log-log, one line per implementation."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []  # an optional extra: pip install -e '.[plot]'
    paths = []
    for op in ("forward", "backward"):
        fig, ax = plt.subplots(figsize=(7, 5))
        op_rows = sorted((r for r in rows if r["op"] == op), key=lambda r: (r["elements"], r["flops"]))
        for name, marker in zip(CONTENDERS, "os^v"):  # points, not lines: one x can hold several shapes
            ax.plot([r["elements"] for r in op_rows], [r[f"{name} s"] for r in op_rows], marker, label=name,
                    markersize=5, alpha=0.7)
        ax.set(xscale="log", yscale="log", xlabel="elements of inp (B*T*C)", ylabel="seconds per call (median)",
               title=f"matmul {op}: C = OC, {op_rows[0]['threads']} threads, BLAS {blas['architecture']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        path = f"{prefix}-{op}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def summary(rows):
    """Per op, one line: the tuned op against the best other over the grid (median and worst; the
    shapes below 0.90, and of those the ones whose paired interval lies below it too: calls of a
    fraction of a millisecond move widely between bursts on these VMs, and 3 rounds make wide
    intervals), and
    how many shapes ran a tuned size's choice (here or on a kin machine), its nearest tuned size's,
    or BLAS (nothing tuned near)."""
    lines = []
    for op in ("forward", "backward"):
        op_rows = [r for r in rows if r["op"] == op]
        if not op_rows:
            continue
        ratios = [r["tuned / best other"] for r in op_rows]
        worst = min(op_rows, key=lambda r: r["tuned / best other"])
        origins = collections.Counter(r["origin"] for r in op_rows)
        surely_below = sum(r["tuned / best other high"] < 0.9 for r in op_rows)  # the whole interval
        rounds = sorted(r["rounds"] for r in op_rows)
        lines.append(f"{op}: tuned / best other median {statistics.median(ratios):.2f}, worst {min(ratios):.2f} "
                     f"({worst['shape']}), {sum(x < 0.9 for x in ratios)} of {len(ratios)} below 0.90 "
                     f"({surely_below} with the whole interval below); {rounds[0]}-{rounds[-1]} rounds a shape; dispatch: "
                     + ", ".join(f"{n} {origin}" for origin, n in origins.most_common()))
    return lines
