"""Render a kernel template with one Config into numba source."""
import functools
import hashlib
import importlib.util
from pathlib import Path

import jinja2

# The micro-kernels need SLP vectorization and must not meet the loop vectorizer, which turns
# them into gathers and scatters (about 100x slower). These are numba.core.config names.
COMPILE_FLAGS = {"SLP_VECTORIZE": 1, "LOOP_VECTORIZE": 0}


@functools.cache
def templates_dir():
    """templates/ of the checkout, installed as the package data `autotune.templates` (pyproject.toml)."""
    spec = importlib.util.find_spec("autotune.templates")
    if spec is None or not spec.submodule_search_locations:  # run from a checkout that was not installed
        return Path(__file__).resolve().parent.parent / "templates"
    return Path(list(spec.submodule_search_locations)[0])


@functools.cache
def environment(autoescape=False):
    return jinja2.Environment(loader=jinja2.FileSystemLoader(templates_dir()), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                              autoescape=autoescape)


def render(kernel, config):
    """Numba source for `kernel` (an ops.Kernel) with `config`'s parameters as literals."""
    params = config.template_params()
    label = " ".join(f"{k}={v}" for k, v in params.items())
    flags = " ".join(f"{k}={v}" for k, v in COMPILE_FLAGS.items())
    return render_file(kernel.template, params=label, compile_flags=flags, **params)


def render_file(template, **context):
    return environment().get_template(template).render(template=template, **context)


@functools.cache
def template_hash(kernel):
    """Hash of everything that renders into `kernel`'s source: it names the study (a changed template
    starts a new one) and is kept in records as provenance; staleness compares rendered sources (store)."""
    digest = hashlib.sha256()
    for path in sorted(templates_dir().glob("*.jinja")) + [Path(__file__).with_name("stack_arrays.py")]:
        if path.name.startswith("_") or path.name == kernel.template or path.suffix == ".py":
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
