"""Render a kernel template with one Config into numba source."""
import functools
import hashlib
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

# The micro-kernels need SLP vectorization and must not meet the loop vectorizer, which turns
# them into gathers and scatters (about 100x slower). These are numba.core.config names.
COMPILE_FLAGS = {"SLP_VECTORIZE": 1, "LOOP_VECTORIZE": 0}


@functools.cache
def _environment():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["rstrip"] = str.rstrip  # a block macro's last newline, so its call sits on its own line
    return env


def render(kernel, config):
    """Numba source for `kernel` (an ops.Kernel) with `config`'s parameters as literals."""
    params = config.template_params()
    if len(kernel.pack_options) == 1:  # a template with one way to read its operands has no such parameter
        del params["pack"]
    label = " ".join(f"{k}={v}" for k, v in params.items())
    flags = " ".join(f"{k}={v}" for k, v in COMPILE_FLAGS.items())
    return render_file(kernel.template, params=label, compile_flags=flags, **params)


def render_file(template, **context):
    return _environment().get_template(template).render(template=template, **context)


@functools.cache
def template_hash(kernel):
    """Hash of everything that renders into `kernel`'s source: a stored winner from other templates is stale."""
    digest = hashlib.sha256()
    for path in sorted(TEMPLATES.glob("*.jinja")) + [Path(__file__).with_name("stack_arrays.py")]:
        if path.name.startswith("_") or path.name == kernel.template or path.suffix == ".py":
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
