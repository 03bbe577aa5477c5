"""Successive halving and Hyperband (lib.search): the budget arithmetic of their plans (which must
reach max_budget), that halving keeps the best config when learning curves never cross, budget
accounting, seeds, bad inputs."""
import numpy as np
import pytest

from lib.search import (Pool, TrialResult, halving_plan, hyperband, hyperband_plan, random_search,
                        successive_halving)


class NonCrossingObjective:
    """config {"quality": q} -> the curve q * (1 - 0.9^t) for t = 1..budget: a higher q is higher at every
    epoch, so the curves never cross and the rank after one epoch is the final rank. Counts its calls."""

    def __init__(self):
        self.batches = []

    def __call__(self, config: dict, budget: int) -> TrialResult:
        curve = config["quality"] * (1 - 0.9 ** np.arange(1, budget + 1))
        return TrialResult(score=float(curve[-1]), curve=curve)

    def many(self, configs: list, budget: int) -> list:
        self.batches.append((len(configs), budget))
        return [self(config, budget) for config in configs]


def quality_pool(size: int = 100) -> Pool:
    qualities = np.random.default_rng(1).permutation(size) / size
    return Pool([{"quality": float(q)} for q in qualities])


def budget_of(rungs: list) -> int:
    return sum(n * r for n, r in rungs)


@pytest.mark.parametrize("n, r, big_r, eta, rungs", [
    (27, 1, 27, 3, [(27, 1), (9, 3), (3, 9), (1, 27)]),
    (81, 1, 27, 3, [(81, 1), (27, 3), (9, 9), (3, 27)]),          # R reached with 3 configs left
    (16, 1, 8, 2, [(16, 1), (8, 2), (4, 4), (2, 8)]),
    (10, 2, 18, 3, [(10, 2), (3, 6), (1, 18)]),                    # floors: 10 / 3 -> 3, 10 / 9 -> 1
    (1, 5, 5, 3, [(1, 5)]),
])
def test_halving_plan(n, r, big_r, eta, rungs):
    assert halving_plan(n, r, big_r, eta) == rungs


def test_every_plan_reaches_max_budget():
    # the last rung trains to R, whatever n >= eta^k is, so a search always hands back a full-budget score
    for n in range(9, 60):
        assert halving_plan(n, 2, 18, 3)[-1] == (n // 9, 18)


def test_halving_plan_budget_of_the_textbook_example():
    # n = 27, r = 1, R = 27, eta = 3: every rung spends n_i r_i = 27 epochs, 108 in all
    rungs = halving_plan(27, 1, 27, 3)
    assert [n * r for n, r in rungs] == [27, 27, 27, 27] and budget_of(rungs) == 108


def test_hyperband_plan_is_li_et_al_table_1():
    # Li et al. (2018), Table 1: R = 81, eta = 3
    assert hyperband_plan(81, 3) == [
        [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
        [(34, 3), (11, 9), (3, 27), (1, 81)],
        [(15, 9), (5, 27), (1, 81)],
        [(8, 27), (2, 81)],
        [(5, 81)],
    ]
    assert [budget_of(rungs) for rungs in hyperband_plan(81, 3)] == [405, 363, 351, 378, 405]


@pytest.mark.parametrize("big_r, eta, r, first_brackets_n", [
    (27, 3, 1, [27, 12, 6, 4]),         # s_max = 3: n = ceil(4 / (s + 1) * 3^s)
    (8, 2, 1, [8, 6, 4, 4]),            # s_max = 3: n = ceil(4 / (s + 1) * 2^s)
    (27, 3, 3, [9, 5, 3]),              # s_max = floor(log_3 9) = 2: n = ceil(3 / (s + 1) * 3^s)
    (5, 3, 5, [1]),                     # r = R: one bracket, one config trained to R
])
def test_hyperband_plan_brackets(big_r, eta, r, first_brackets_n):
    brackets = hyperband_plan(big_r, eta, min_budget=r)
    assert [rungs[0][0] for rungs in brackets] == first_brackets_n
    s_max = len(brackets) - 1
    for s, rungs in zip(range(s_max, -1, -1), brackets):
        assert len(rungs) == s + 1 and rungs[0][1] == big_r // eta**s and rungs[-1][1] == big_r


def test_successive_halving_finds_the_best_when_curves_never_cross():
    objective = NonCrossingObjective()
    result = successive_halving(objective, quality_pool(), n_configs=27, min_budget=1, max_budget=27, eta=3)
    first_rung = [trial for trial in result.trials if trial.budget == 1]
    best_sampled = max(trial.config["quality"] for trial in first_rung)
    assert len(first_rung) == 27
    assert result.best.config["quality"] == best_sampled and result.best.budget == 27
    # every rung kept the best n_{i+1} of the one before
    for (n_next, r_next), (_, r) in zip(halving_plan(27, 1, 27, 3)[1:], halving_plan(27, 1, 27, 3)):
        rung = sorted((t.config["quality"] for t in result.trials if t.budget == r), reverse=True)
        kept = sorted((t.config["quality"] for t in result.trials if t.budget == r_next), reverse=True)
        assert kept == rung[:n_next]


def test_successive_halving_evaluates_each_rung_in_one_batch_and_spends_the_plans_budget():
    objective = NonCrossingObjective()
    result = successive_halving(objective, quality_pool(), n_configs=27, min_budget=1, max_budget=27, eta=3)
    assert objective.batches == halving_plan(27, 1, 27, 3)
    assert result.budget_used == 108
    assert [trial.number for trial in result.trials] == list(range(27 + 9 + 3 + 1))
    assert result.best_so_far()[0][-1] == 108


def test_successive_halving_beats_random_search_on_the_same_budget_when_curves_never_cross():
    # 108 epochs: halving sees 27 configs, random search 4 at R = 27; averaged over 50 repetitions
    halving = [successive_halving(NonCrossingObjective(), quality_pool(), 27, 1, 27, 3, seed=seed).best.score
               for seed in range(50)]
    random = [random_search(NonCrossingObjective(), quality_pool(), 4, 27, seed=seed).best.score
              for seed in range(50)]
    standard_error = np.sqrt(np.var(halving) / len(halving) + np.var(random) / len(random))
    assert np.mean(halving) - np.mean(random) > 3 * standard_error


def test_hyperband_runs_every_bracket_and_spends_their_budget():
    objective = NonCrossingObjective()
    result = hyperband(objective, quality_pool(), max_budget=27, eta=3)
    brackets = hyperband_plan(27, 3)
    assert objective.batches == [rung for rungs in brackets for rung in rungs]
    assert result.budget_used == sum(budget_of(rungs) for rungs in brackets) == 108 + 99 + 108 + 108
    assert [trial.number for trial in result.trials] == list(range(len(result.trials)))
    assert result.best.budget == 27


@pytest.mark.parametrize("search", [
    lambda seed: successive_halving(NonCrossingObjective(), quality_pool(), 27, 1, 27, 3, seed=seed),
    lambda seed: hyperband(NonCrossingObjective(), quality_pool(), 27, 3, seed=seed),
])
def test_seeds_reproduce_and_differ(search):
    def configs(result):
        return [trial.config["quality"] for trial in result.trials]
    assert configs(search(0)) == configs(search(0))
    assert configs(search(0)) != configs(search(1))


@pytest.mark.parametrize("call, error, name", [
    (lambda: halving_plan(0, 1, 27), ValueError, "n_configs"),
    (lambda: halving_plan(2.0, 1, 27), TypeError, "n_configs"),
    (lambda: halving_plan(27, 0, 27), ValueError, "min_budget"),
    (lambda: halving_plan(27, 28, 27), ValueError, "min_budget"),
    (lambda: halving_plan(27, 1, 27, eta=1), ValueError, "eta"),
    (lambda: halving_plan(27, 1, 27, eta=2.5), TypeError, "eta"),
    (lambda: halving_plan(2, 2, 18), ValueError, "n_configs"),       # one rung of 2 epochs, then no config left
    (lambda: halving_plan(9, 1, 27), ValueError, "n_configs"),       # the last config would stop at 9 epochs
    (lambda: halving_plan(27, 2, 20), ValueError, "max_budget"),     # rungs at 2, 6, 18: none at 20
    (lambda: successive_halving(NonCrossingObjective(), quality_pool(), 27, 2, 20), ValueError, "max_budget"),
    (lambda: hyperband_plan(0), ValueError, "max_budget"),
    (lambda: hyperband_plan(10, 3), ValueError, "max_budget"),      # 10 / 9 is not a whole number of epochs
    (lambda: hyperband_plan(27, 3, min_budget=30), ValueError, "min_budget"),
    (lambda: hyperband_plan(27, 3, min_budget=2), ValueError, "min_budget"),   # would start at 27 / 9 = 3 epochs
    (lambda: hyperband(NonCrossingObjective(), quality_pool(), 27, 3, min_budget=2), ValueError, "min_budget"),
    (lambda: successive_halving(NonCrossingObjective(), quality_pool(), 27, 1, 27, seed=-1), ValueError, "seed"),
    (lambda: hyperband(NonCrossingObjective(), quality_pool(), 27, eta=True), TypeError, "eta"),
    (lambda: successive_halving(NonCrossingObjective(), [{"quality": 1.0}], 1, 1, 1), TypeError, "space"),
    (lambda: hyperband(NonCrossingObjective(), quality_pool(), 27, seed=1.5), TypeError, "seed"),
])
def test_bad_inputs_name_the_argument(call, error, name):
    with pytest.raises(error, match=f"^{name}"):
        call()
