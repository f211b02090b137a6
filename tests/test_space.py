"""The search space and its validity rules, for this target and for targets described on paper."""
import dataclasses

import pytest

from autotune import machine, space
from autotune.ops import Problem

BIG = Problem("forward", 65536, 768, 768)
# Targets this machine may not be: what numba would compile for with NUMBA_CPU_NAME/FEATURES, or on
# another ISA. Nothing in the space may assume x86 beyond the detection itself.
AVX2 = machine.Target("x86_64", "haswell", "-avx512f", 256, 16)
AVX512 = machine.Target("x86_64", "znver4", "host", 512, 32)
NEON = machine.Target("aarch64", "neoverse-n1", "host", 128, 32)
TARGETS = {"avx2": AVX2, "avx512": AVX512, "neon": NEON}


def config(**changes):
    values = dict(mr=6, nr=2 * machine.target().lanes, kc=256, row_tiles=4, col_panels=8, order="panels-outer", threads=1)
    values.update(changes)
    return space.Config(**values)


@pytest.mark.parametrize("target", TARGETS.values(), ids=TARGETS)
def test_choices_scale_with_the_targets_vectors(target):
    assert space.choices(target=target)["nr"] == tuple(target.lanes * v for v in (1, 2, 3, 4))


@pytest.mark.parametrize("target", TARGETS.values(), ids=TARGETS)
def test_the_untuned_fallback_fits_every_target(target):
    """The analytical config (what an untuned size runs) fits the target's registers; moved to a
    small problem's choices (as a search seeds it) it is a valid choice there."""
    for problem in (BIG, Problem("forward", 256, 48, 48), Problem("backward_weight", 48, 48, 256),
                    Problem("forward", 1, 1, 1), Problem("backward_input", 4096, 50304, 768)):
        c = space.analytical_config(problem, target=target)
        assert c.nr % target.lanes == 0 and space.registers_needed(c.mr, c.nr, target.lanes) <= target.registers
        seed = space.nearest_choice(c, problem, target)
        assert space.in_choices(seed, problem, target) and space.invalid_reason(seed, problem, target) is None


def test_one_fallback_config_per_kernel_for_all_but_the_smallest_sizes():
    sizes = [Problem("forward", m, n, k) for m, n, k in ((4096, 768, 768), (65536, 768, 3072), (1024, 192, 192))]
    assert len({space.analytical_config(p) for p in sizes}) == 1
    assert space.analytical_config(Problem("forward", 256, 48, 48)).threads == 1


def test_register_budget_follows_the_target():
    """6x16 fits AVX2's 16 registers (12 accumulators + 2 + 1); 8x16 does not; with 32 registers it does."""
    wide = Problem("forward", 4096, 768, 768)
    assert space.invalid_reason(config(mr=6, nr=16), wide, AVX2) is None
    assert "needs 19 vector registers, the target has 16" in space.invalid_reason(config(mr=8, nr=16), wide, AVX2)
    assert "not a multiple of the vector width" in space.invalid_reason(config(mr=8, nr=24), wide, AVX512)
    assert space.invalid_reason(config(mr=12, nr=32), wide, AVX512) is None
    assert "vector registers" in space.invalid_reason(config(mr=16, nr=32), wide, AVX512)
    assert space.invalid_reason(config(mr=8, nr=8), wide, NEON) is None  # 16 + 2 + 1 of 32


def test_analytical_model_avx2_gives_the_classic_6x16():
    # 16 ymm registers: 6x16 uses 12 accumulators + 2 b vectors + 1 broadcast; KC from 3/4 of a
    # 32 KiB L1 over (6 + 16) floats = 279 -> 256; MC from half of 256 KiB L2 = 128 rows -> 16 tiles.
    caches = {1: 32 << 10, 2: 256 << 10, 3: 8 << 20}
    c = space.analytical_config(BIG, caches=caches, target=AVX2)
    assert (c.mr, c.nr, c.kc, c.row_tiles, c.col_panels) == (6, 16, 256, 16, 256)


def test_analytical_model_avx512():
    # 32 zmm: 12x32 needs 24 + 2 + 1 = 27 registers (16x32 would need 35); KC = 24576 / (44 * 4) = 139 -> 128.
    caches = {1: 32 << 10, 2: 1 << 20, 3: 32 << 20}
    c = space.analytical_config(BIG, caches=caches, target=AVX512)
    assert (c.mr, c.nr, c.kc, c.row_tiles) == (12, 32, 128, 64)


def test_analytical_model_neon():
    # 32 registers of 4 floats: NR = 8 (2 vectors); 12x8 needs 24 + 2 + 1 = 27 registers.
    c = space.analytical_config(BIG, caches={1: 64 << 10, 2: 1 << 20, 3: 32 << 20}, target=NEON)
    assert (c.mr, c.nr) == (12, 8)


def test_sizes_past_the_dimension_keep_only_the_smallest_cover():
    small = Problem("forward", 256, 48, 48)
    assert space.choices(small, AVX2)["kc"] == (64,)
    assert space.choices(small, AVX2)["nr"] == (8, 16, 24, 32)
    assert space.choices(Problem("forward", 256, 20, 48), AVX2)["nr"] == (8, 16, 24)
    assert space.choices(Problem("forward", 3, 10, 10), AVX2)["mr"] == (2, 3)
    # 100 rows: 32 tiles of 4 rows cover them, 64 tiles are the same task
    hundred = Problem("forward", 100, 48, 48)
    assert "row_tiles" in space.invalid_reason(space.Config(4, 8, 64, 64, 2, "rows-outer", 1), hundred, AVX2)
    assert space.invalid_reason(space.Config(4, 8, 64, 32, 2, "rows-outer", 1), hundred, AVX2) is None


def test_config_round_trips_through_optuna_params():
    c = config(order="rows-outer", threads=2, pack_a=False)
    assert space.Config.from_dict(c.params()) == c
    assert c.template_params()["parallel"] and not config(threads=1).template_params()["parallel"]


def test_a_seed_from_another_size_is_moved_to_the_nearest_choices():
    """kc=1024 won where K is 3072; at K=768 the nearest choice is 768."""
    problem = Problem("forward", 4096, 3072, 768)
    assert space.nearest_choice(config(kc=1024), problem) == config(kc=768)
    assert space.nearest_choice(config(), problem) == config()


def test_a_parallel_winner_moved_to_a_smaller_size_gives_every_thread_a_task():
    """The 1024x192x192 forward's tasks (512 x 192) at M = 256 would be one task for two threads."""
    winner = space.Config(8, 48, 256, 64, 4, "rows-outer", 2, pack_a=False, bias_slice=True)
    small = Problem("forward", 256, 192, 192)
    assert space.threads_without_a_task(dataclasses.replace(winner, row_tiles=32), small) == 1
    moved = space.nearest_choice(winner, small, AVX512)
    assert space.threads_without_a_task(moved, small) == 0 and (moved.row_tiles, moved.col_panels) == (16, 4)
    assert space.nearest_choice(winner, Problem("forward", 4096, 192, 192), AVX512) == winner
    one_tile = Problem("forward", 8, 48, 192)  # one register block: nothing left to split
    assert space.threads_without_a_task(space.nearest_choice(winner, one_tile, AVX512), one_tile) == 1


def test_only_backward_weight_splits_k_and_only_on_several_threads():
    weight, forward = Problem("backward_weight", 48, 48, 16384), Problem("forward", 16384, 48, 48)
    assert space.choices(weight)["split_k"] == (False, True)
    assert space.choices(forward)["split_k"] == (False,)
    assert space.invalid_reason(config(kc=64, nr=16, row_tiles=2, col_panels=1, threads=2, split_k=True), weight, AVX2) is None
    assert "does not split K" in space.invalid_reason(config(kc=64, nr=16, threads=2, split_k=True), forward, AVX2)
    assert "more than one thread" in space.invalid_reason(config(kc=64, nr=16, threads=1, split_k=True), weight, AVX2)


def test_a_split_k_config_gives_every_worker_a_k_block():
    """One K block for two workers leaves one idle: refused, and a winner of a longer K moved here gets
    smaller blocks; the analytical model's K blocks are short enough."""
    long_k, short_k = Problem("backward_weight", 48, 48, 16384), Problem("backward_weight", 48, 48, 4096)
    winner = space.Config(6, 48, 4096, 8, 1, "rows-outer", 2, pack_a=False, split_k=True)  # AVX-512's 6 x 48
    assert space.invalid_reason(winner, long_k, AVX512) is None
    assert "leaves 1 of 2 workers without a block" in space.invalid_reason(winner, short_k, AVX512)
    assert space.nearest_choice(winner, short_k, AVX512).kc == 2048
    tiny = Problem("backward_weight", 48, 48, 300)
    model = space.analytical_config(tiny, target=AVX2)
    assert space.workers_without_a_k_block(model, tiny) == 0


def test_only_the_weight_gradient_reads_b_in_place_and_only_where_nr_divides_n():
    """inp's rows are whole panel rows only where NR divides N: elsewhere, and for the other kernels
    (whose B is weight, transposed or not), B is packed; a winner moved to another N keeps B in place
    only where its NR still divides N."""
    c48, c192 = Problem("backward_weight", 48, 48, 16384), Problem("backward_weight", 192, 192, 1024)
    c40 = Problem("backward_weight", 40, 40, 4096)  # no NR of 16 to 64 floats divides 40
    assert space.choices(c48, AVX512)["pack_b"] == (True, False)
    assert space.choices(c192, AVX512)["pack_b"] == (True, False)
    assert space.choices(c40, AVX512)["pack_b"] == (True,)
    assert space.choices(Problem("backward_input", 16384, 48, 48), AVX512)["pack_b"] == (True,)
    winner = space.Config(6, 48, 4096, 8, 1, "rows-outer", 2, pack_a=False, split_k=True, pack_b=False)
    assert space.invalid_reason(winner, c48, AVX512) is None
    assert space.invalid_reason(dataclasses.replace(winner, kc=256, row_tiles=4, col_panels=4), c192, AVX512) is None
    assert "needs N a multiple of NR" in space.invalid_reason(winner, Problem("backward_weight", 48, 32, 16384), AVX512)
    assert "needs N a multiple of NR" in space.invalid_reason(winner, Problem("backward_weight", 48, 120, 16384), AVX512)
    assert "always packs B" in space.invalid_reason(dataclasses.replace(winner, split_k=False),
                                                    Problem("forward", 16384, 48, 48), AVX512)
    assert space.nearest_choice(winner, Problem("backward_weight", 48, 48, 4096), AVX512).pack_b is False
    assert space.nearest_choice(winner, Problem("backward_weight", 192, 192, 4096), AVX512).pack_b is False
    assert space.nearest_choice(winner, Problem("backward_weight", 64, 64, 4096), AVX512).pack_b is True


def test_only_the_forward_may_start_its_tiles_from_a_bias_slice():
    """The backward kernels have no bias: the choice is the forward's, and a forward winner moved to
    another kernel (a seed of its study) starts from the old tile start."""
    forward, weight = Problem("forward", 4096, 768, 768), Problem("backward_weight", 768, 768, 4096)
    assert space.choices(forward, AVX512)["bias_slice"] == (False, True)
    assert space.choices(weight, AVX512)["bias_slice"] == (False,)
    sliced = space.Config(8, 32, 768, 2, 2, "rows-outer", 2, pack_a=False, bias_slice=True)
    assert space.invalid_reason(sliced, forward, AVX512) is None
    assert "has no bias" in space.invalid_reason(sliced, weight, AVX512)
    assert space.nearest_choice(sliced, weight, AVX512).bias_slice is False
    assert "bias-slice" in sliced.label()


def test_the_analytical_model_splits_k_where_the_tasks_cannot_feed_every_thread():
    """dweight of C = OC = 48 is one task: its threads split K. At 768 x 768 there are tasks for all."""
    assert space.analytical_config(Problem("backward_weight", 48, 48, 16384), target=AVX2).split_k
    assert not space.analytical_config(Problem("backward_weight", 768, 768, 16384), target=AVX2).split_k
    assert not space.analytical_config(Problem("backward_weight", 48, 48, 256), target=AVX2).split_k  # one thread


@pytest.fixture
def l1(monkeypatch):
    """A 32 KiB L1 data cache of `ways` ways (Zen 4's 8 by default), whatever this host's."""
    def geometry(ways=8, size=32 << 10):
        monkeypatch.setattr(machine, "l1_data_ways", lambda: ways)
        monkeypatch.setattr(machine, "cache_sizes", lambda: {1: size, 2: 1 << 20, 3: 32 << 20})
    geometry()
    return geometry


def test_rows_of_a_that_share_one_l1_set_are_not_read_in_place(l1):
    """At K = 1024 (GPT-2 medium's C) rows 4 KiB apart all fall in one L1 set: twelve of them evict
    each other on 8 ways (0.66-0.69x an 8-row block, docs/where-the-time-goes.md); packed, or eight rows, they do not."""
    for kernel in ("forward", "backward_input"):
        aliased = Problem(kernel, 4096, 1024, 1024)
        assert "one L1 set of 8 ways" in space.invalid_reason(config(mr=12, nr=32, pack_a=False), aliased, AVX512)
        assert space.invalid_reason(config(mr=8, nr=32, pack_a=False), aliased, AVX512) is None
        assert space.invalid_reason(config(mr=12, nr=32, pack_a=True), aliased, AVX512) is None
        assert space.invalid_reason(config(mr=12, nr=32, pack_a=False), Problem(kernel, 4096, 768, 768), AVX512) is None
    weight = Problem("backward_weight", 1024, 1024, 4096)  # reads A's MR values from one row of dout
    assert space.invalid_reason(config(mr=12, nr=32, pack_a=False), weight, AVX512) is None
    l1(ways=12, size=48 << 10)  # a 48 KiB, 12-way L1 (recent Intel cores)
    assert space.invalid_reason(config(mr=12, nr=32, pack_a=False), Problem("forward", 4096, 1024, 1024), AVX512) is None


def test_a_winner_moved_to_a_size_where_its_rows_share_an_l1_set_gets_fewer_rows(l1):
    """The loader runs the K = 768 winner at K = 1024 as an 8-row block, still reading A in place."""
    winner = config(mr=12, nr=32, kc=768, row_tiles=2, col_panels=2, order="rows-outer", threads=2, pack_a=False)
    assert space.nearest_choice(winner, Problem("forward", 4096, 1024, 1024), AVX512) == config(
        mr=8, nr=32, kc=768, row_tiles=2, col_panels=2, order="rows-outer", threads=2, pack_a=False)
    assert space.nearest_choice(winner, Problem("forward", 4096, 1024, 768), AVX512) == winner
