"""A code-generated autotuner for the matmuls of llm.c training.

The pipeline, one module per stage: ops (the kernels, references, baselines) -> space (Config,
choices, validity) -> render (Jinja templates in templates/) -> build (numba, content-addressed)
-> verify (float64 reference) -> measure (timing, BLAS) -> search (optuna; sandbox runs build,
verify and measure of each candidate in a child process) -> store (tuned/) -> load (`import tuned`).
bench and sweep time the result against numpy and the naive loop; report draws it.
"""
import os

# numba runs the kernels on libgomp's OpenMP threads, which spin after a parallel region, by default
# for 300000 turns: a BLAS call that follows (a training step's backward after a forward kernel)
# then shares the two cores with them. `bench --op step` on a Zen 3, forward kernel and backward
# BLAS, read the step at 0.36-0.37x the best other at 16,1024,48,48 and 0.08-0.09x at 4,1024,48,48
# with that default (2 runs), 0.65-0.71x and 0.26-0.34x with 10000 turns (4 runs); kernels timed
# alone, within noise either way (docs/spin_count.py). libgomp reads this once, when numba first starts its threads, so it
# is set before then; a value the user set is kept. README, "Threads that spin".
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
