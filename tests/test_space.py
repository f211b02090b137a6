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
    assert space.Config.from_dict({**c.template_params(), "threads": 2}) == c
    assert "threads" not in c.template_params()  # a runtime setting, not part of the source
