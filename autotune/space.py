"""The search space: one Config per candidate kernel, the choices, and what makes a config invalid.

A Config is at once the optuna parameters, the Jinja context and (with the kernel source) the
build cache key. Tile sizes are categorical: the space has cliffs, so neighbours say little.
Choices and validity follow the target numba compiles for (machine.target()): NR is one to four
of its vectors, and a register block must fit its vector registers.
"""
import math
from dataclasses import asdict, dataclass, fields, replace

from autotune import machine


@dataclass(frozen=True)
class Config:
    mr: int  # rows of the register block
    nr: int  # columns of the register block (a multiple of the vector width)
    kc: int  # length of a block of the summed axis
    row_tiles: int  # register blocks down one parallel task: MC = mr * row_tiles
    col_panels: int  # register blocks across one parallel task: NC = nr * col_panels
    order: str  # "rows-outer" or "panels-outer": which tile loop is outside within a task
    threads: int  # numba threads at run time; 1 renders a kernel without a parallel region
    pack_a: bool = True  # each task copies its rows of A into panels first, or reads them in place
    split_k: bool = False  # backward_weight only: the threads split K (B*T) rather than the M x N tasks
    pack_b: bool = True  # B copied into NR-wide panels per K block, or (backward_weight, N == NR) read in place
    bias_slice: bool = False  # forward only: a tile starts from a slice of NR bias values, or indexes bias[j0 + j]
    slice_b: bool = False  # B's panel is sliced at its K block once per tile (b_panel[k]), or indexed b_panel[b_k + k]
    sums_in_registers: bool = False  # backward_weight only: dbias's sums held NR at a time down a K block, or added per row
    pack_blocks: bool = False  # forward only: weight (and A, where packed) transposed into panels 8 x 8 at a time, or a row at a time

    def params(self):
        """The optuna parameters (every field)."""
        return asdict(self)

    def template_params(self):
        """The Jinja context: every field, and whether the kernel has a parallel region."""
        return {**asdict(self), "parallel": self.threads > 1}

    def label(self):
        return (f"{self.mr}x{self.nr} kc={self.kc} task={self.row_tiles}x{self.col_panels} "
                f"{self.order} threads={self.threads}" + ("" if self.pack_a else " A-in-place")
                + (" split-K" if self.split_k else "") + ("" if self.pack_b else " B-in-place")
                + (" bias-slice" if self.bias_slice else "") + (" B-sliced" if self.slice_b else "")
                + (" sums-in-registers" if self.sums_in_registers else "") + (" packed-in-blocks" if self.pack_blocks else ""))

    @classmethod
    def from_dict(cls, values):
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


VECTORS_PER_NR = (1, 2, 3, 4)  # NR is this many of the target's vectors
SPLIT_K_KERNELS = ("backward_weight",)  # the templates that can split K between threads
ROWS_IN_PLACE_KERNELS = ("forward", "backward_input")  # A read in place is MR rows, K floats apart
B_IN_PLACE_KERNELS = ("backward_weight",)  # B (inp) is K-major rows: N / NR panel rows each where NR divides N
BIAS_KERNELS = ("forward",)  # the templates whose tiles start from a bias
SUMS_KERNELS = ("backward_weight",)  # the templates that sum dbias
BLOCK_PACK_KERNELS = ("forward",)  # the templates that transpose every call's B (weight) into panels


def choices(problem=None, target=None):
    """Every value the search may pick, per parameter; for a problem, without sizes that only
    repeat a smaller choice (a register block or K block past the dimension)."""
    lanes = (target or machine.target()).lanes
    options = {
        "mr": (2, 3, 4, 5, 6, 8, 12, 16),
        "nr": tuple(lanes * v for v in VECTORS_PER_NR),
        "kc": (64, 128, 256, 384, 512, 768, 1024, 2048, 4096),
        "row_tiles": (1, 2, 4, 8, 16, 32, 64),
        "col_panels": (1, 2, 4, 8, 16, 32, 64, 128, 256),
        "order": ("rows-outer", "panels-outer"),
        "threads": tuple(range(1, machine.max_threads() + 1)),
        "pack_a": (True, False),
        "split_k": (False, True),
        "pack_b": (True, False),
        "bias_slice": (False, True),
        "slice_b": (False, True),
        "sums_in_registers": (False, True),
        "pack_blocks": (False, True),
    }
    if problem is not None:
        for name, dim in (("mr", problem.M), ("nr", problem.N), ("kc", problem.K)):
            options[name] = tuple(v for v in options[name] if not _past_dimension(v, dim, options[name]))
        for name, tile, dim in (("row_tiles", "mr", problem.M), ("col_panels", "nr", problem.N)):
            sizes = options[name]  # keep a task size if it is useful with at least one tile size
            options[name] = tuple(v for v in sizes if any(not _past_dimension(t * v, dim, [t * x for x in sizes])
                                                          for t in options[tile]))
        if problem.kernel not in SPLIT_K_KERNELS:
            options["split_k"] = (False,)
        if problem.kernel not in B_IN_PLACE_KERNELS or all(problem.N % nr for nr in options["nr"]):
            options["pack_b"] = (True,)
        if problem.kernel not in BIAS_KERNELS:
            options["bias_slice"] = (False,)
        if problem.kernel not in SUMS_KERNELS:
            options["sums_in_registers"] = (False,)
        if problem.kernel not in BLOCK_PACK_KERNELS:
            options["pack_blocks"] = (False,)
    return options


def registers_needed(mr, nr, lanes):
    """Vector registers of an MR x NR micro-kernel: the accumulators, one row of B, one broadcast of A."""
    return mr * nr // lanes + nr // lanes + 1


FMA_PIPES, FMA_LATENCY = 2, 4  # per core; a register block needs PIPES * LATENCY independent vectors
SERIAL_FLOPS = 4e6  # below this a parallel region costs more than it saves (about 20 us on 2 threads)


def analytical_config(problem, caches=None, target=None, vectors=2):
    """The BLIS analytical model (Low et al., 2016) for this target and its caches: the config a size
    nobody tuned runs, the anchor every candidate of a search is timed against, and (for NR of one
    to four vectors) seeds of every search, moved to the problem's choices. One config per kernel for
    all sizes but the smallest, so a program that meets many untuned sizes compiles it once.

    Register block: NR = `vectors` vectors; MR the largest choice whose accumulators, B row and
    broadcast fit the registers, with at least FMA_PIPES * FMA_LATENCY accumulators to hide FMA
    latency where it can. KC: the MR x KC and KC x NR micro-panels fill 3/4 of L1. MC: the MC x KC
    block of A fills half of L2; NC: KC x NC of B fills half of L3. Problems under SERIAL_FLOPS run
    on one thread; where the M x N tasks are fewer than the threads, the threads split K (if the
    kernel can).
    """
    caches = caches or machine.cache_sizes()
    target = target or machine.target()
    options = choices(target=target)
    nr = vectors * target.lanes
    fitting = [m for m in options["mr"] if registers_needed(m, nr, target.lanes) <= target.registers]
    hiding = [m for m in fitting if m * vectors >= FMA_PIPES * FMA_LATENCY]
    mr = max(hiding or fitting or [min(options["mr"])])
    kc = _largest_at_most(options["kc"], caches[1] * 3 // 4 // ((mr + nr) * 4))
    row_tiles = _largest_at_most(options["row_tiles"], caches[2] // 2 // (kc * 4) // mr)
    col_panels = _largest_at_most(options["col_panels"], caches[3] // 2 // (kc * 4) // nr)
    threads = 1 if problem.flops < SERIAL_FLOPS else max(options["threads"])
    config = Config(mr, nr, kc, row_tiles, col_panels, "panels-outer", threads, pack_a=True, slice_b=True,
                    sums_in_registers=problem.kernel in SUMS_KERNELS)
    if problem.kernel in SPLIT_K_KERNELS and threads_without_a_task(config, problem):  # a K block for every worker
        config = replace(config, split_k=True, kc=min(kc, _largest_at_most(options["kc"], problem.K // threads)))
    return config


def _largest_at_most(options, bound):
    return max([v for v in options if v <= bound] or [min(options)])


def nearest_choice(config, problem, target=None):
    """`config` with each value outside the problem's choices replaced by the nearest choice (by
    ratio; the first option for a categorical value), and tasks shrunk until they span no more than
    the problem: a winner of a larger size, e.g. kc=1024 where K is 768, still seeds a search here.
    A block that would read more of A's rows in place than an L1 set holds gets fewer rows, and tasks
    fewer than the threads get smaller until each thread has one."""
    options = choices(problem, target)

    def nearest(name, value):
        if value in options[name]:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            return options[name][0]
        return min(options[name], key=lambda v: abs(math.log(v / value)))

    moved = Config.from_dict({name: nearest(name, value) for name, value in config.params().items()})
    if b_in_place_misfits(moved, problem):  # another N: B's rows are no longer whole panels
        moved = replace(moved, pack_b=True)
    for name in ("row_tiles", "col_panels"):
        while getattr(moved, name) > 1 and name in (invalid_reason(moved, problem, target) or ""):
            moved = replace(moved, **{name: getattr(moved, name) // 2})
    while rows_sharing_an_l1_set(moved, problem):  # fewer rows: packing A, which every task repeats, costs more
        moved = replace(moved, mr=max(m for m in options["mr"] if m < moved.mr))
    while workers_without_a_k_block(moved, problem) and moved.kc > min(options["kc"]):
        moved = replace(moved, kc=max(v for v in options["kc"] if v < moved.kc))
    while threads_without_a_task(moved, problem) and moved.row_tiles * moved.col_panels > 1:
        name = "row_tiles" if moved.row_tiles > 1 else "col_panels"  # B*T is the long axis: split it first
        moved = replace(moved, **{name: getattr(moved, name) // 2})
    return moved


def in_choices(config, problem, target=None):
    options = choices(problem, target)
    return all(value in options[name] for name, value in config.params().items())


def invalid_reason(config, problem, target=None):
    """Why `config` should not be compiled for `problem`, or None. Shared by search, loader and tests."""
    target = target or machine.target()
    if config.nr % target.lanes:
        return f"nr={config.nr} is not a multiple of the vector width ({target.lanes} floats)"
    needed = registers_needed(config.mr, config.nr, target.lanes)
    if needed > target.registers:
        return (f"register block {config.mr}x{config.nr} needs {needed} vector registers, "
                f"the target has {target.registers}")
    if config.threads > machine.max_threads():
        return f"threads={config.threads} exceeds numba's {machine.max_threads()}"
    if config.split_k and problem.kernel not in SPLIT_K_KERNELS:
        return f"split_k: the {problem.kernel} template does not split K"
    if config.split_k and config.threads == 1:
        return "split_k needs more than one thread"
    if config.bias_slice and problem.kernel not in BIAS_KERNELS:
        return f"bias_slice: the {problem.kernel} template has no bias"
    if config.sums_in_registers and problem.kernel not in SUMS_KERNELS:
        return f"sums_in_registers: the {problem.kernel} template sums no dbias"
    if config.pack_blocks and problem.kernel not in BLOCK_PACK_KERNELS:
        return f"pack_blocks: the {problem.kernel} template transposes no weight into panels"
    misfit = b_in_place_misfits(config, problem)
    if misfit:
        return misfit
    idle = workers_without_a_k_block(config, problem)
    if idle:
        return (f"split_k: K = {problem.K} in blocks of kc = {config.kc} leaves {idle} of {config.threads} workers "
                f"without a block")
    shared = rows_sharing_an_l1_set(config, problem)
    if shared:
        return (f"A read in place: its {config.mr} rows, {problem.K} floats apart, put {shared} lines in one L1 set "
                f"of {machine.l1_data_ways()} ways, where they evict each other")
    all_choices = choices(target=target)
    spans = [("mr", 1, problem.M), ("nr", 1, problem.N), ("kc", 1, problem.K),
             ("row_tiles", config.mr, problem.M), ("col_panels", config.nr, problem.N)]
    for name, unit, dim in spans:
        value = getattr(config, name)
        if _past_dimension(unit * value, dim, [unit * v for v in all_choices[name]]):
            return f"{name}={value} spans more than the dimension {dim}: the same as a smaller choice"
    return None


def rows_sharing_an_l1_set(config, problem):
    """How many rows of A read in place fall in one L1 set at a time, if more than its ways, else 0.

    Rows K floats apart repeat their L1 set every way_bytes / gcd(4 K, way_bytes) rows (way_bytes =
    L1 size / ways, 4 KiB on x86): at K = 1024 or 3072 every row is in the same set. On a Zen 4
    (8 ways) a 12 x 32 block read in place ran 0.66-0.69x an 8 x 32 one at 4,1024,1024,1024 (forward
    and input gradient, 9 interleaved rounds); packed, it ran 1.00x with a task across all of N,
    0.70x with tasks of 64 columns, each of which packs its rows of A again."""
    if config.pack_a or problem.kernel not in ROWS_IN_PLACE_KERNELS:
        return 0
    ways = machine.l1_data_ways()
    way_bytes = machine.cache_sizes()[1] // ways
    shared = -(-config.mr // (way_bytes // math.gcd(4 * problem.K, way_bytes)))
    return shared if shared > ways else 0


def b_in_place_misfits(config, problem):
    """Why B cannot be read in place for `problem`, or None: only inp's rows, and only where each is
    whole panel rows (NR divides N), are read in place."""
    if config.pack_b:
        return None
    if problem.kernel not in B_IN_PLACE_KERNELS:
        return f"pack_b: the {problem.kernel} template always packs B"
    if problem.N % config.nr:
        return f"B read in place needs N a multiple of NR (whole panels across N): N = {problem.N}, nr = {config.nr}"
    return None


def workers_without_a_k_block(config, problem):
    """Where the threads split K: how many get none of its K blocks (they idle, and the kernel runs
    serially). A 6 x 48 split-K winner of K = 16384 (kc = 4096) moved to K = 4096 ran at 0.55-0.59x
    the best other in a sweep (2026-11-30), where every worker had blocks at its own size."""
    if not config.split_k:
        return 0
    return max(0, config.threads - -(-problem.K // config.kc))


def threads_without_a_task(config, problem):
    """Where the threads split the M x N tasks: how many find none (they idle). The 1024x192x192
    forward's winner (8 x 48 blocks, tasks of 512 x 192) moved to M = 256 is one task for two
    threads: it ran 0.57-0.60x the best other there (three `bench` runs, 2026-11-30)."""
    if config.split_k or config.threads == 1:
        return 0
    return max(0, config.threads - task_count(config, problem))


def task_count(config, problem):
    """The MC x NC tasks that cover the problem's M x N."""
    return -(-problem.M // (config.mr * config.row_tiles)) * -(-problem.N // (config.nr * config.col_panels))


def _past_dimension(size, dim, sizes):
    """Sizes past the dimension all behave like the smallest of them that covers it: keep only that one."""
    if size <= dim:
        return False
    return size > min([s for s in sizes if s >= dim] or [size])
