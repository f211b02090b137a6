"""A code-generated autotuner for the matmuls of llm.c training.

The pipeline, one module per stage: ops (the kernels, references, baselines) -> space (Config,
choices, validity) -> render (Jinja templates in templates/) -> build (numba, content-addressed)
-> verify (float64 reference) -> measure (timing, BLAS) -> search (optuna; sandbox runs build,
verify and measure of each candidate in a child process) -> store (tuned/) -> load (`import tuned`).
bench and sweep time the result against numpy and the naive loop; report draws it.
"""
from autotune import machine

machine.use_full_vector_width()  # before anything here compiles: it fixes numba's target
