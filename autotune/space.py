"""The search space: one Config per candidate kernel, the choices, and what makes a config invalid.

A Config is at once the optuna parameters, the Jinja context and (with the kernel source) the
build cache key. Tile sizes are categorical: the space has cliffs, so neighbours say little.
"""
import math
from dataclasses import asdict, dataclass, fields, replace

from autotune import machine
from autotune.ops import KERNELS


@dataclass(frozen=True)
class Config:
    mr: int  # rows of the register block
    nr: int  # columns of the register block (a multiple of the vector width)
    kc: int  # length of a block of the summed axis
    row_tiles: int  # register blocks down one parallel task: MC = mr * row_tiles
    col_panels: int  # register blocks across one parallel task: NC = nr * col_panels
    order: str  # "rows-outer" or "panels-outer": which tile loop is outside within a task
    threads: int  # numba threads at run time; 1 renders a kernel without a parallel region
    pack: bool = True  # copy operands into panels first, or read them in place (ops.Kernel.pack_options)

    def params(self):
        """The optuna parameters (every field)."""
        return asdict(self)

    def template_params(self):
        """The Jinja context: the thread count is set at run time; one thread renders a serial kernel."""
        params = asdict(self)
        params["parallel"] = params.pop("threads") > 1
        return params

    def label(self):
        return (f"{self.mr}x{self.nr} kc={self.kc} task={self.row_tiles}x{self.col_panels} "
                f"{self.order} threads={self.threads}" + ("" if self.pack else " unpacked"))

    @classmethod
    def from_dict(cls, values):
        """From params() or a stored record; records made before `pack` existed packed."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


def choices(problem=None):
    """Every value the search may pick, per parameter; for a problem, without sizes that only
    repeat a smaller choice (a register block or K block past the dimension)."""
    options = {
        "mr": (4, 6, 8, 12, 16),
        "nr": (16, 32),  # 48 measured 5-16 GF/s here: LLVM's SLP pass gives up on 3-vector rows
        "kc": (64, 128, 256, 384, 512, 768, 1024, 2048, 4096),
        "row_tiles": (1, 2, 4, 8, 16, 32),
        "col_panels": (1, 2, 4, 8, 16),
        "order": ("rows-outer", "panels-outer"),
        "threads": tuple(range(1, machine.max_threads() + 1)),
        "pack": (True, False),
    }
    if problem is not None:
        options["pack"] = KERNELS[problem.kernel].pack_options
        for name, dim in (("mr", problem.M), ("nr", problem.N), ("kc", problem.K)):
            options[name] = tuple(v for v in options[name] if not _past_dimension(v, dim, options[name]))
        for name, tile, dim in (("row_tiles", "mr", problem.M), ("col_panels", "nr", problem.N)):
            sizes = options[name]  # keep a task size if it is useful with at least one tile size
            options[name] = tuple(v for v in sizes if any(not _past_dimension(t * v, dim, [t * x for x in sizes])
                                                          for t in options[tile]))
    return options


# The search's untuned fallback, used by the loader for shapes nobody tuned: the register block
# and blocking that measured well on AVX-512 for the headline forward, all threads.
def default_config():
    return Config(mr=8, nr=32, kc=256, row_tiles=4, col_panels=8, order="panels-outer",
                  threads=machine.max_threads())


FMA_PIPES, FMA_LATENCY = 2, 4  # per core; a register block needs PIPES * LATENCY independent vectors


def analytical_config(problem, caches=None, lanes=None, registers=None):
    """The BLIS analytical model (Low et al., 2016) mapped onto the choices, for a warm start.

    Register block: NR = 2 vectors; MR the largest choice whose MR*NR/lanes accumulators, NR/lanes
    b vectors and one broadcast fit the registers, with at least FMA_PIPES * FMA_LATENCY
    accumulators to hide FMA latency. KC: the MR x KC and KC x NR micro-panels fill 3/4 of L1.
    MC: the MC x KC block of the left operand fills half of L2; NC: KC x NC fills half of L3.
    """
    caches = caches or machine.cache_sizes()
    lanes, registers = lanes or machine.vector_floats(), registers or machine.vector_registers()
    options = choices(problem)
    nr = max(n for n in options["nr"] if n <= 2 * lanes)
    fitting = [m for m in options["mr"] if registers_needed(m, nr, lanes) <= registers
               and m * nr // lanes >= FMA_PIPES * FMA_LATENCY] or [min(options["mr"])]
    mr = max(fitting)
    kc = _largest_at_most(options["kc"], caches[1] * 3 // 4 // ((mr + nr) * 4))
    row_tiles = _largest_at_most(options["row_tiles"], caches[2] // 2 // (kc * 4) // mr)
    col_panels = _largest_at_most(options["col_panels"], caches[3] // 2 // (kc * 4) // nr)
    config = Config(mr, nr, kc, row_tiles, col_panels, "panels-outer", max(options["threads"]))
    while invalid_reason(config, problem) and "row_tiles" in invalid_reason(config, problem):
        config = replace(config, row_tiles=config.row_tiles // 2)
    while invalid_reason(config, problem) and "col_panels" in invalid_reason(config, problem):
        config = replace(config, col_panels=config.col_panels // 2)
    return config


def registers_needed(mr, nr, lanes):
    """Vector registers of an MR x NR micro-kernel: the accumulators, one row of b, one broadcast of a."""
    return mr * nr // lanes + nr // lanes + 1


def _largest_at_most(options, bound):
    return max([v for v in options if v <= bound] or [min(options)])


def nearest_choice(config, problem):
    """`config` with each value outside the problem's choices replaced by the nearest choice (by
    ratio; the first option for a categorical value): a winner of a larger size, e.g. kc=1024
    where K is 768, still seeds a search at this one."""
    options = choices(problem)

    def nearest(name, value):
        if value in options[name]:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            return options[name][0]
        return min(options[name], key=lambda v: abs(math.log(v / value)))

    return Config.from_dict({name: nearest(name, value) for name, value in config.params().items()})


def in_choices(config, problem):
    options = choices(problem)
    return all(value in options[name] for name, value in config.params().items())


def invalid_reason(config, problem):
    """Why `config` should not be compiled for `problem`, or None. Shared by search and tests."""
    lanes, registers = machine.vector_floats(), machine.vector_registers()
    if config.nr % lanes:
        return f"nr={config.nr} is not a multiple of the vector width {lanes}"
    needed = registers_needed(config.mr, config.nr, lanes)
    if needed > registers:
        return f"register block {config.mr}x{config.nr} needs {needed} vector registers, the CPU has {registers}"
    if config.pack not in KERNELS[problem.kernel].pack_options:
        return f"pack={config.pack} is not an option of the {problem.kernel} template"
    if config.threads > machine.max_threads():
        return f"threads={config.threads} exceeds numba's {machine.max_threads()}"
    all_choices = choices()
    spans = [("mr", 1, problem.M), ("nr", 1, problem.N), ("kc", 1, problem.K),
             ("row_tiles", config.mr, problem.M), ("col_panels", config.nr, problem.N)]
    for name, unit, dim in spans:
        value = getattr(config, name)
        if _past_dimension(unit * value, dim, [unit * v for v in all_choices[name]]):
            return f"{name}={value} spans more than the dimension {dim}: the same as a smaller choice"
    return None


def _past_dimension(size, dim, sizes):
    """Sizes past the dimension all behave like the smallest of them that covers it: keep only that one."""
    if size <= dim:
        return False
    return size > min([s for s in sizes if s >= dim] or [size])
