"""Search spaces, the objective interface, grid and random search (lib/search.py, first section):
each sampler's distribution against its scale, with tolerances sized to the sample; grids and
their Cartesian order; the pool drawn without replacement; the results table; both searches on a
cheap synthetic objective; MLPObjective on a tiny budget (a batched run equals separate runs, a
cached longer curve equals a fresh shorter run); and every bad argument."""
import math
import re

import numpy as np
import pytest

from lib.data import mnist1d_splits
from lib.search import (
    Categorical, IntUniform, LogUniform, MLPObjective, Pool, SearchResult, SearchSpace, Trial, TrialResult,
    Uniform, evaluate_all, evaluate_over_seeds, grid_search, random_search,
)

N_DRAWS = 20_000
N_BINS = 10


def assert_counts_uniform(counts: np.ndarray) -> None:
    """Counts of N_DRAWS draws over equally likely bins: each within 4 binomial standard errors of its
    expectation (a fair sampler fails this in about 6 bins in 100,000)."""
    n, p = counts.sum(), 1 / len(counts)
    standard_error = math.sqrt(n * p * (1 - p))
    assert np.abs(counts - n * p).max() < 4 * standard_error, counts


def binned(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.histogram(values, bins=N_BINS, range=(low, high))[0]


# --------------------------------------------------------------------------------------
# Samplers: each scale's distribution
# --------------------------------------------------------------------------------------

def test_log_uniform_sample_has_a_uniform_log(rng):
    values = LogUniform(1e-4, 1.0).sample(rng, N_DRAWS)
    assert values.shape == (N_DRAWS,) and values.min() >= 1e-4 and values.max() <= 1.0
    assert_counts_uniform(binned(np.log10(values), -4, 0))   # each decade (and tenth of one) equally often


def test_uniform_sample_is_uniform_and_its_log_is_not(rng):
    values = Uniform(1e-4, 1.0).sample(rng, N_DRAWS)
    assert values.min() >= 1e-4 and values.max() <= 1.0
    assert_counts_uniform(binned(values, 1e-4, 1.0))
    # The contrast that puts rates on a log scale: a linear draw spends ~90% of trials in the top decade.
    assert np.mean(values > 0.1) == pytest.approx(0.9, abs=0.01)


def test_int_uniform_hits_every_integer_equally_often(rng):
    values = IntUniform(16, 25).sample(rng, N_DRAWS)
    assert np.issubdtype(values.dtype, np.integer)
    assert set(values.tolist()) == set(range(16, 26))   # both ends included
    assert_counts_uniform(np.bincount(values - 16))


def test_categorical_frequencies_and_tuple_choices(rng):
    choices = ["sgd", "adam", (1, 2), None]
    values = Categorical(choices).sample(rng, N_DRAWS)
    assert values.shape == (N_DRAWS,) and values.dtype == object
    assert_counts_uniform(np.array([sum(value == choice for value in values) for choice in choices]))


def test_same_generator_seed_gives_the_same_draws():
    space = SearchSpace({"lr": LogUniform(1e-3, 3.0), "width": IntUniform(16, 128), "opt": Categorical(["a", "b"])})
    first, second = space.sample(np.random.default_rng(7), 5), space.sample(np.random.default_rng(7), 5)
    assert first == second and len(first) == 5
    assert all(list(config) == ["lr", "width", "opt"] for config in first)
    # Plain Python values, so that configs print, hash and compare simply.
    assert all(type(config["lr"]) is float and type(config["width"]) is int for config in first)


# --------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------

def test_log_uniform_grid_is_log_spaced_with_both_ends():
    grid = LogUniform(1e-3, 1.0).grid(4)
    np.testing.assert_allclose(grid, [1e-3, 1e-2, 1e-1, 1.0])
    assert grid[0] == 1e-3 and grid[-1] == 1.0
    np.testing.assert_allclose(grid[1:] / grid[:-1], 10.0)   # equal ratios between neighbours


def test_linear_and_integer_grids():
    np.testing.assert_allclose(Uniform(0.0, 0.5).grid(3), [0.0, 0.25, 0.5])
    np.testing.assert_array_equal(IntUniform(16, 128).grid(3), [16, 72, 128])
    np.testing.assert_array_equal(Categorical(["a", "b"]).grid(5), ["a", "b"])   # all choices, n ignored


def test_grid_is_the_cartesian_product_first_dimension_slowest():
    space = SearchSpace({"lr": LogUniform(1e-2, 1.0), "weight_decay": LogUniform(1e-4, 1e-2), "p": Uniform(0, 1)})
    grid = space.grid({"lr": 3, "weight_decay": 2, "p": 2})
    assert len(grid) == 3 * 2 * 2
    assert [config["lr"] for config in grid[:4]] == pytest.approx([0.01] * 4)   # lr changes last...
    assert [config["p"] for config in grid[:4]] == pytest.approx([0, 1, 0, 1])   # ... p first
    assert [config["weight_decay"] for config in grid[:4]] == pytest.approx([1e-4, 1e-4, 1e-2, 1e-2])
    assert len({tuple(config.values()) for config in grid}) == 12   # no combination twice
    assert len(space.grid(4)) == 4 ** 3


# --------------------------------------------------------------------------------------
# Pool
# --------------------------------------------------------------------------------------

def test_pool_draws_without_replacement(rng):
    configs = [{"lr": 10.0 ** -index} for index in range(6)]
    pool = Pool(configs)
    drawn = pool.sample(rng, 6)
    assert sorted(config["lr"] for config in drawn) == sorted(config["lr"] for config in configs)
    assert len({config["lr"] for config in pool.sample(rng, 4)}) == 4
    assert len(pool) == 6 and pool.names == ["lr"]


# --------------------------------------------------------------------------------------
# Results and the two searches, on a cheap synthetic objective
# --------------------------------------------------------------------------------------

def synthetic(config: dict, budget: int) -> TrialResult:
    """Best at lr = 0.1 whatever the decay; the curve rises to the score over the budget."""
    score = -(math.log10(config["lr"]) + 1) ** 2
    return TrialResult(score, score - np.arange(budget)[::-1] * 0.1)


def make_result(scores, budget=2) -> SearchResult:
    return SearchResult("test", [Trial(index, {"lr": 0.1 * (index + 1)}, budget, score, np.full(budget, score))
                                 for index, score in enumerate(scores)])


def test_search_result_best_ties_budget_and_best_so_far():
    result = make_result([0.2, 0.5, 0.1, 0.5, 0.4])
    assert result.best.number == 1   # of two equal scores, the earliest
    assert result.budget_used == 10
    spent, best = result.best_so_far()
    np.testing.assert_array_equal(spent, [2, 4, 6, 8, 10])
    np.testing.assert_array_equal(best, [0.2, 0.5, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(result.scores(), [0.2, 0.5, 0.1, 0.5, 0.4])
    assert result.configs()[2] == {"lr": pytest.approx(0.3)}


def test_table_is_sorted_by_score_and_cut_at_top():
    lines = make_result([0.2, 0.5, 0.1, 0.5, 0.4]).table(top=3).splitlines()
    assert lines[0] == "test search, 5 trials, 10 epochs"
    assert lines[1].split() == ["trial", "lr", "budget", "score"]
    assert [line.split()[0] for line in lines[2:]] == ["1", "3", "4"]   # best first, ties in trial order
    assert len(make_result([0.2, 0.5]).table().splitlines()) == 4


def test_grid_search_finds_the_best_grid_point():
    space = SearchSpace({"lr": LogUniform(1e-3, 10.0), "weight_decay": LogUniform(1e-5, 1e-1)})
    result = grid_search(synthetic, space, 5, budget=3)
    assert result.method == "grid" and len(result.trials) == 25 and result.budget_used == 75
    assert result.best.config["lr"] == pytest.approx(0.1) and result.best.score == pytest.approx(0.0)
    assert [trial.number for trial in result.trials] == list(range(25))
    assert result.best.curve.shape == (3,)


def test_random_search_is_reproducible_and_near_the_optimum():
    space = SearchSpace({"lr": LogUniform(1e-3, 10.0)})
    result = random_search(synthetic, space, 30, budget=1, seed=3)
    assert result.method == "random" and len(result.trials) == 30
    assert result.configs() == random_search(synthetic, space, 30, budget=1, seed=3).configs()
    assert result.configs() != random_search(synthetic, space, 30, budget=1, seed=4).configs()
    assert abs(math.log10(result.best.config["lr"]) + 1) < 0.3   # 30 draws over 4 decades: one lands near 0.1


def test_random_search_over_a_pool_visits_each_config_once():
    pool = Pool([{"lr": value} for value in (0.01, 0.1, 1.0)])
    result = random_search(synthetic, pool, 3, budget=1)
    assert sorted(config["lr"] for config in result.configs()) == [0.01, 0.1, 1.0]


def test_evaluate_all_prefers_many():
    class Counting:
        calls = []

        def __call__(self, config, budget):
            raise AssertionError("evaluate_all should call many")

        def many(self, configs, budget):
            self.calls.append(len(configs))
            return [synthetic(config, budget) for config in configs]

    objective = Counting()
    results = evaluate_all(objective, [{"lr": 0.1}, {"lr": 1.0}], 2)
    assert objective.calls == [2] and [result.score for result in results] == [0.0, -1.0]


# --------------------------------------------------------------------------------------
# MLPObjective on a tiny budget
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_data():
    return mnist1d_splits(train_size=256)   # 4 updates per epoch at batch 64


def small_objective(data, **options) -> MLPObjective:
    return MLPObjective(data, **{"width": 16, "batch_size": 64, **options})


CONFIGS = [{"lr": 0.5, "weight_decay": 1e-3}, {"lr": 0.05}, {"lr": 1.0, "weight_decay": 1e-5}]


def test_many_equals_separate_runs_in_any_order(small_data):
    batched = small_objective(small_data).many(CONFIGS, 3)
    reversed_batch = small_objective(small_data).many(CONFIGS[::-1], 3)[::-1]
    separate = [small_objective(small_data)(config, 3) for config in CONFIGS]
    for together, backwards, alone in zip(batched, reversed_batch, separate):
        np.testing.assert_allclose(together.curve, alone.curve, atol=1e-6)   # batched kernels: rounding only
        np.testing.assert_allclose(backwards.curve, alone.curve, atol=1e-6)
    assert len({tuple(result.curve) for result in batched}) == 3


def test_cached_longer_run_answers_a_shorter_budget_exactly(small_data):
    objective = small_objective(small_data)
    long = objective.many(CONFIGS, 4)
    assert objective.epochs_trained == 12
    short = objective.many(CONFIGS, 2)
    assert objective.epochs_trained == 12   # cache hits are free
    fresh = small_objective(small_data).many(CONFIGS, 2)
    for cached, new, longer in zip(short, fresh, long):
        np.testing.assert_array_equal(cached.curve, new.curve)
        np.testing.assert_array_equal(cached.curve, longer.curve[:2])
        assert cached.score == cached.curve[-1]
    objective.many([CONFIGS[0], CONFIGS[0], {"lr": 0.2}], 4)   # a repeated config is trained once
    assert objective.epochs_trained == 16


def test_config_seed_depends_on_values_and_seed_only(small_data):
    objective = small_objective(small_data)
    assert objective.config_seed({"lr": 0.1}) == objective.config_seed({"weight_decay": 0.0, "lr": 0.1})
    assert objective.config_seed({"lr": 0.1}) != objective.config_seed({"lr": 0.2})
    assert objective.config_seed({"lr": 0.1}) != small_objective(small_data, seed=1).config_seed({"lr": 0.1})


def test_diverged_run_scores_chance_and_batch_norm_trains(small_data):
    diverged = small_objective(small_data)({"lr": 1e6}, 2)
    np.testing.assert_array_equal(diverged.curve, [0.1, 0.1])
    with_norm = small_objective(small_data, norm="batch")({"lr": 0.5, "weight_decay": 1e-3}, 2)
    assert with_norm.score > 0.15   # above chance after 8 updates


def test_evaluate_over_seeds_equals_each_objective_alone_and_fills_the_caches(small_data):
    seeded = [small_objective(small_data, seed=seed) for seed in (0, 1, 2)]
    seeded[0].many(CONFIGS[:1], 3)                            # a cached pair is not trained again
    scores = evaluate_over_seeds(seeded, CONFIGS, 3)
    assert scores.shape == (3, len(CONFIGS))
    assert [objective.epochs_trained for objective in seeded] == [9, 9, 9]
    for row, objective in zip(scores, seeded):
        alone = small_objective(small_data, seed=objective.seed).many(CONFIGS, 3)
        np.testing.assert_allclose(row, [result.score for result in alone], atol=1e-6)   # batched kernels: rounding only
        assert [result.score for result in objective.many(CONFIGS, 3)] == list(row)
    assert [objective.epochs_trained for objective in seeded] == [9, 9, 9]   # later calls are cache hits


@pytest.mark.parametrize("options, error", [
    ({"width": 8}, ValueError), ({"norm": "batch"}, ValueError), ({"batch_size": 32}, ValueError),
    ({"data": "other"}, ValueError), ({"objective": "f"}, TypeError),
])
def test_evaluate_over_seeds_needs_objectives_that_differ_only_in_seed(small_data, options, error):
    if "objective" in options:
        other = options["objective"]
    elif "data" in options:
        other = MLPObjective(mnist1d_splits(train_size=256), width=16, batch_size=64, seed=1)   # equal, not the same
    else:
        other = small_objective(small_data, **{"seed": 1, **options})
    with pytest.raises(error, match="^objectives:"):
        evaluate_over_seeds([small_objective(small_data), other], CONFIGS, 1)


@pytest.mark.parametrize("objectives, configs, budget, error, name", [
    ([], CONFIGS, 1, TypeError, "objectives"),
    (None, CONFIGS, 1, TypeError, "objectives"),
    ("one", {"lr": 0.1}, 1, TypeError, "configs"),
    ("one", CONFIGS, 0, ValueError, "budget"),
    ("one", [{"weight_decay": 1e-3}], 1, ValueError, "config"),
])
def test_evaluate_over_seeds_bad_arguments(small_data, objectives, configs, budget, error, name):
    objectives = [small_objective(small_data)] if objectives == "one" else objectives
    with pytest.raises(error, match=f"^{re.escape(name)}:"):
        evaluate_over_seeds(objectives, configs, budget)


# --------------------------------------------------------------------------------------
# Bad arguments: the message names the argument
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, error, name", [
    (lambda: Uniform(1.0, 1.0), ValueError, "low, high"),
    (lambda: Uniform(2.0, 1.0), ValueError, "low, high"),
    (lambda: Uniform(0.0, math.inf), ValueError, "high"),
    (lambda: Uniform("0", 1.0), TypeError, "low"),
    (lambda: LogUniform(0.0, 1.0), ValueError, "low"),
    (lambda: LogUniform(-1.0, 1.0), ValueError, "low"),
    (lambda: LogUniform(1e-2, 1e-3), ValueError, "low, high"),
    (lambda: IntUniform(1.5, 4), TypeError, "low"),
    (lambda: IntUniform(4, 4), ValueError, "low, high"),
    (lambda: Categorical([]), ValueError, "choices"),
    (lambda: Categorical("abc"), TypeError, "choices"),
    (lambda: SearchSpace({}), ValueError, "dimensions"),
    (lambda: SearchSpace({"lr": (1e-3, 1.0)}), TypeError, "dimensions['lr']"),
    (lambda: SearchSpace([LogUniform(1e-3, 1.0)]), TypeError, "dimensions"),
    (lambda: Pool([]), ValueError, "configs"),
    (lambda: Pool([0.1]), TypeError, "configs"),
    (lambda: LogUniform(1e-3, 1.0).sample(np.random.default_rng(0), 2.0), TypeError, "n"),
    (lambda: LogUniform(1e-3, 1.0).sample(np.random.default_rng(0), 0), ValueError, "n"),
    (lambda: LogUniform(1e-3, 1.0).sample(0, 3), TypeError, "rng"),
    (lambda: LogUniform(1e-3, 1.0).grid(1), ValueError, "n"),
    (lambda: IntUniform(1, 3).grid(4), ValueError, "n"),
    (lambda: Categorical(["a", "b"]).grid(1), ValueError, "n"),   # n >= 2 on every dimension, as in SearchSpace.grid
    (lambda: SearchSpace({"lr": LogUniform(1e-3, 1.0)}).grid({"lr": 1}), ValueError, "points['lr']"),
    (lambda: SearchSpace({"opt": Categorical(["sgd"])}).grid(1), ValueError, "points"),
    (lambda: SearchSpace({"lr": LogUniform(1e-3, 1.0)}).grid({"wd": 3}), ValueError, "points"),
    (lambda: SearchSpace({"lr": LogUniform(1e-3, 1.0)}).grid(3.0), TypeError, "points"),
    (lambda: Pool([{"lr": 0.1}]).sample(np.random.default_rng(0), 2), ValueError, "n"),
    (lambda: TrialResult(float("nan"), np.zeros(1)), ValueError, "score"),
    (lambda: TrialResult(0.5, np.array([0.1, 0.4])), ValueError, "curve"),
    (lambda: SearchResult("grid", []), ValueError, "trials"),
    (lambda: make_result([0.1]).table(top=0), ValueError, "top"),
    (lambda: evaluate_all("f", [{"lr": 0.1}], 1), TypeError, "objective"),
    (lambda: evaluate_all(synthetic, {"lr": 0.1}, 1), TypeError, "configs"),
    (lambda: evaluate_all(synthetic, [{"lr": 0.1}], 0), ValueError, "budget"),
    (lambda: evaluate_all(lambda config, budget: 0.5, [{"lr": 0.1}], 1), TypeError, "objective"),
    (lambda: evaluate_all(lambda config, budget: synthetic(config, 1), [{"lr": 0.1}], 2), ValueError, "objective"),
    (lambda: grid_search(synthetic, Pool([{"lr": 0.1}]), 2, 1), TypeError, "space"),
    (lambda: random_search(synthetic, SearchSpace({"lr": LogUniform(1e-3, 1.0)}), 0, 1), ValueError, "n_trials"),
    (lambda: random_search(synthetic, {"lr": LogUniform(1e-3, 1.0)}, 3, 1), TypeError, "space"),
    (lambda: random_search(synthetic, SearchSpace({"lr": LogUniform(1e-3, 1.0)}), 3, 1, seed=-1), ValueError, "seed"),
])
def test_bad_arguments_name_the_argument(make, error, name):
    with pytest.raises(error, match=f"^{re.escape(name)}:"):
        make()


@pytest.mark.parametrize("options, config, error, name", [
    ({"width": 0}, None, ValueError, "width"),
    ({"norm": "layer"}, None, ValueError, "norm"),
    ({"seed": -1}, None, ValueError, "seed"),
    ({}, {"weight_decay": 1e-3}, ValueError, "config"),
    ({}, {"lr": 0.1, "dropout": 0.5}, ValueError, "config"),
    ({}, {"lr": -0.1}, ValueError, "config['lr']"),
    ({}, {"lr": 0.1, "weight_decay": -1e-3}, ValueError, "config['weight_decay']"),
])
def test_mlp_objective_bad_arguments(small_data, options, config, error, name):
    with pytest.raises(error, match=f"^{re.escape(name)}:"):
        small_objective(small_data, **options)(config, 1)


def test_mlp_objective_needs_splits(small_data):
    with pytest.raises(TypeError, match="^data:"):
        MLPObjective(small_data.x_train)
