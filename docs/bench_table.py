"""The results tables of docs/results.md from several `python -m autotune bench` runs: ranges over the runs.

    python -m autotune bench --csv bench1.csv     # three times, nothing else running
    python docs/bench_table.py bench1.csv bench2.csv bench3.csv

Each cell is min-max over the runs (one number when they agree to the digit shown); dispatch is
the last run's. The ratios are each run's paired medians (bench.versus).
"""
import csv
import sys

COLUMNS = [("tuned", "tuned GF/s"), ("numpy", "numpy GF/s"), ("numpy 2-D", "numpy 2-D GF/s"),
           ("BLAS beta", "BLAS beta GF/s"), ("torch", "torch GF/s"), ("tuned / best other", "tuned / best other"),
           ("tuned / BLAS beta", "tuned / BLAS beta"), ("% peak", "tuned % peak")]


def spread(values, digits):
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low}-{high}"


def table(runs):
    """Markdown rows, one per (shape, op), in the order of the first run."""
    keys = [(r["shape"], r["op"]) for r in runs[0]]
    by_key = [{(r["shape"], r["op"]): r for r in run} for run in runs]
    lines = ["| B,T,C,OC | op | dispatch | " + " | ".join(name for name, _ in COLUMNS) + " | best other | entry us |",
             "|" + "---|" * (len(COLUMNS) + 5)]
    for key in keys:
        rows = [run[key] for run in by_key if key in run]
        cells = []
        for _, column in COLUMNS:
            values = [float(r[column]) for r in rows if r.get(column) not in (None, "", "nan")]
            digits = 2 if column.startswith("tuned / ") else 0 if "%" in column else 1
            cells.append(spread(values, digits) if values else "-")
        entry = [float(r["entry point us"]) for r in rows
                 if r["entry point us"] != "nan" and float(r["tuned s"]) < 1e-3]
        best = sorted({r["best other"] for r in rows})
        shape = ",".join(part.split("=")[1] for part in key[0].split(","))
        lines.append(f"| {shape} | {key[1]} | {rows[-1]['dispatch']} | "
                     + " | ".join(cells) + f" | {', '.join(best)} | {spread(entry, 0) if entry else '-'} |")
    return "\n".join(lines)


def main(paths):
    runs = []
    for path in paths:
        with open(path, newline="") as f:
            runs.append(list(csv.DictReader(f)))
    print(table(runs))
    peaks = sorted({float(r["peak GF/s"]) for run in runs for r in run})
    print(f"\n{len(runs)} runs; FMA peak used for % peak: {', '.join(f'{p:.1f}' for p in peaks)} GF/s.")


if __name__ == "__main__":
    main(sys.argv[1:])
