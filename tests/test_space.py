"""The search space and its validity rules, which the search applies before compiling."""
from autotune import machine, space
from autotune.ops import Problem

BIG = Problem("forward", 65536, 768, 768)


def config(**changes):
    values = dict(mr=8, nr=32, kc=256, row_tiles=4, col_panels=8, order="panels-outer", threads=1)
    values.update(changes)
    return space.Config(**values)


def test_default_and_sample_configs_are_valid_for_a_large_problem():
    assert space.invalid_reason(config(), BIG) is None
    assert space.invalid_reason(space.default_config(), BIG) is None


def test_register_budget_rejects_blocks_that_spill():
    if machine.vector_registers() == 32:
        assert "vector registers" in space.invalid_reason(config(mr=16, nr=32), BIG)
        assert space.invalid_reason(config(mr=12, nr=32), BIG) is None


def test_sizes_past_the_dimension_keep_only_the_smallest_cover():
    small = Problem("forward", 256, 48, 48)
    assert space.choices(small)["kc"] == (64,)
    assert space.choices(small)["nr"] == (16, 32)
    assert space.choices(Problem("forward", 256, 20, 48))["nr"] == (16, 32)
    assert space.choices(Problem("forward", 256, 16, 48))["nr"] == (16,)
    assert space.choices(Problem("forward", 3, 10, 10))["mr"] == (4,)
    # 256 rows: 16 tiles of 16 rows cover them, 32 tiles are the same task
    assert "row_tiles" in space.invalid_reason(config(mr=16, nr=16, kc=64, row_tiles=32, col_panels=2), small)
    assert "col_panels" in space.invalid_reason(config(mr=16, nr=16, kc=64, row_tiles=16, col_panels=8), small)
    assert space.invalid_reason(config(mr=16, nr=16, kc=64, row_tiles=16, col_panels=4), small) is None


def test_config_round_trips_through_optuna_params():
    c = config(order="rows-outer", threads=2)
    assert space.Config.from_dict(c.params()) == c
    assert c.template_params()["parallel"] and not config(threads=1).template_params()["parallel"]


def test_analytical_model_avx2_gives_the_classic_6x16():
    # 16 ymm registers: 6x16 uses 12 accumulators + 2 b vectors + 1 broadcast; KC from 3/4 of a
    # 32 KiB L1 over (6 + 16) floats = 279 -> 256; MC from half of 256 KiB L2 = 128 rows -> 16 tiles.
    caches = {1: 32 << 10, 2: 256 << 10, 3: 8 << 20}
    c = space.analytical_config(BIG, caches=caches, lanes=8, registers=16)
    assert (c.mr, c.nr, c.kc, c.row_tiles, c.col_panels) == (6, 16, 256, 16, 16)


def test_analytical_model_avx512():
    # 32 zmm: 12x32 needs 24 + 2 + 1 = 27 registers (16x32 would need 35); KC = 24576 / (44 * 4) = 139 -> 128.
    caches = {1: 32 << 10, 2: 1 << 20, 3: 32 << 20}
    c = space.analytical_config(BIG, caches=caches, lanes=16, registers=32)
    assert (c.mr, c.nr, c.kc, c.row_tiles, c.col_panels) == (12, 32, 128, 32, 16)


def test_analytical_config_is_valid_for_small_problems():
    for problem in (Problem("forward", 256, 48, 48), Problem("backward_weight", 48, 48, 256), Problem("forward", 1, 1, 1)):
        c = space.analytical_config(problem)
        assert space.in_choices(c, problem) and space.invalid_reason(c, problem) is None, (problem, c)


def test_a_seed_from_another_size_is_moved_to_the_nearest_choices():
    """kc=1024 won where K is 3072; at K=768 the nearest choice is 768. The forward cannot read unpacked."""
    problem = Problem("forward", 4096, 3072, 768)
    seed = config(kc=1024, pack=False)
    assert space.nearest_choice(seed, problem) == config(kc=768, pack=True)
    assert space.nearest_choice(config(), problem) == config()
