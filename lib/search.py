"""Hyperparameter search: search spaces, grid and random search, successive halving and Hyperband,
Optuna studies (SQLite on one machine, PostgreSQL across machines), learning-curve diagnosis, and
hypergradients through unrolled SGD.

The hand-written searches teach how each method spends its budget; Optuna runs them for real.
Every search calls one objective interface: ``objective(config, budget) -> TrialResult``, a config
(a dict of hyperparameter values) and a budget (epochs) in, a score (higher is better) and the
learning curve (the score after each epoch) out.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import multiprocessing
import numbers
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import optuna
import torch
import torch.nn.functional as F
from scipy.interpolate import RegularGridInterpolator
from torch import nn

from lib.checks import check_array, check_choice, check_int, check_positive
from lib.data import Splits, TensorBatches, cache_dir, to_tensors
from lib.device import set_seed, tune_for_small_models
from lib.models import mlp
from lib.train import History, SeedwiseSGD, evaluate, train, train_seeds

# ---------------------------------------------------------------------------------------------
# Search spaces, the objective interface, grid and random search
# ---------------------------------------------------------------------------------------------

# The dimensions of a search space. Each one draws random values (``sample``) and lays out a
# grid (``grid``) on its own scale: learning rate and weight decay act by their factor (0.01 to
# 0.1 changes as much as 0.1 to 1), so they live on a log scale; a dropout probability or a
# width acts by its difference, so it lives on a linear one.

def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a np.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    return rng


def _check_range(low, high) -> tuple[float, float]:
    """``low`` and ``high`` as finite floats with low < high."""
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite number, got {value}")
    if not low < high:
        raise ValueError(f"low, high: expected low < high, got low={low}, high={high}")
    return float(low), float(high)


class Uniform:
    """A real hyperparameter on a linear scale: every value in [low, high] equally likely (dropout p)."""

    def __init__(self, low: float, high: float):
        self.low, self.high = _check_range(low, high)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n independent draws, shape (n,)."""
        return _check_rng(rng).uniform(self.low, self.high, check_int("n", n, minimum=1))

    def grid(self, n: int) -> np.ndarray:
        """n evenly spaced values from low to high, ends included, shape (n,)."""
        return np.linspace(self.low, self.high, check_int("n", n, minimum=2))

    def __repr__(self) -> str:
        return f"Uniform({self.low:g}, {self.high:g})"


class LogUniform:
    """A positive hyperparameter on a log scale: log(value) is uniform on [log low, log high].

    Each factor of 10 gets the same share of the draws, so 1e-3..1e-2 is sampled as often as
    0.1..1. Learning rate and weight decay live here.
    """

    def __init__(self, low: float, high: float):
        self.low, self.high = _check_range(low, high)
        if self.low <= 0:
            raise ValueError(f"low: a log scale needs 0 < low < high (log 0 is -infinity), got low={low}")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n independent draws, shape (n,): exp of a uniform draw between log low and log high."""
        log_values = _check_rng(rng).uniform(math.log(self.low), math.log(self.high), check_int("n", n, minimum=1))
        return np.exp(log_values)

    def grid(self, n: int) -> np.ndarray:
        """n log-spaced values from low to high, ends included (equal ratios between neighbours), shape (n,)."""
        return np.geomspace(self.low, self.high, check_int("n", n, minimum=2))

    def __repr__(self) -> str:
        return f"LogUniform({self.low:g}, {self.high:g})"


class IntUniform:
    """An integer hyperparameter on a linear scale: every integer low..high (inclusive) equally likely."""

    def __init__(self, low: int, high: int):
        self.low, self.high = check_int("low", low), check_int("high", high)
        if not self.low < self.high:
            raise ValueError(f"low, high: expected low < high, got low={low}, high={high}")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n independent integers, shape (n,)."""
        return _check_rng(rng).integers(self.low, self.high + 1, check_int("n", n, minimum=1))

    def grid(self, n: int) -> np.ndarray:
        """n evenly spaced integers from low to high, ends included, shape (n,)."""
        check_int("n", n, minimum=2)
        if n > self.high - self.low + 1:
            raise ValueError(f"n: expected at most {self.high - self.low + 1} points (the integers "
                             f"{self.low}..{self.high}), got {n}")
        return np.round(np.linspace(self.low, self.high, n)).astype(int)

    def __repr__(self) -> str:
        return f"IntUniform({self.low}, {self.high})"


class Categorical:
    """A hyperparameter with a few unordered values (an optimizer's name, an activation)."""

    def __init__(self, choices):
        if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence):
            raise TypeError(f"choices: expected a list of values, got {type(choices).__name__}")
        if len(choices) == 0:
            raise ValueError("choices: expected at least one value, got an empty list")
        self.choices = list(choices)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n independent draws, each choice equally likely, shape (n,) (an object array)."""
        picks = _check_rng(rng).integers(0, len(self.choices), check_int("n", n, minimum=1))
        return self._as_array([self.choices[index] for index in picks])

    def grid(self, n: int) -> np.ndarray:
        """All the choices, shape (len(choices),): there is nothing between two of them, so ``n`` is ignored.

        ``n`` must still be at least 2, as for every dimension, so that one ``points`` serves a whole space.
        """
        check_int("n", n, minimum=2)
        return self._as_array(self.choices)

    @staticmethod
    def _as_array(values: list) -> np.ndarray:
        array = np.empty(len(values), dtype=object)  # element by element: a choice may itself be a tuple
        array[:] = values
        return array

    def __repr__(self) -> str:
        return f"Categorical({self.choices!r})"


DIMENSIONS = (Uniform, LogUniform, IntUniform, Categorical)


def _plain(value):
    """A NumPy scalar as the Python number it holds, so that a config prints, hashes and compares simply."""
    return value.item() if isinstance(value, np.generic) else value


class SearchSpace:
    """Named dimensions, e.g. ``SearchSpace({"lr": LogUniform(1e-3, 3.0), "weight_decay": LogUniform(1e-6, 1e-1)})``.

    A config is a dict with one value per name, in the space's order.
    """

    def __init__(self, dimensions: dict):
        if not isinstance(dimensions, dict):
            raise TypeError(f"dimensions: expected a dict of name -> dimension, got {type(dimensions).__name__}")
        if not dimensions:
            raise ValueError("dimensions: expected at least one dimension, got an empty dict")
        for name, dimension in dimensions.items():
            if not isinstance(name, str):
                raise TypeError(f"dimensions: expected string names, got {name!r}")
            if not isinstance(dimension, DIMENSIONS):
                raise TypeError(f"dimensions[{name!r}]: expected Uniform, LogUniform, IntUniform or Categorical, "
                                f"got {type(dimension).__name__}")
        self.dimensions = dict(dimensions)

    @property
    def names(self) -> list:
        return list(self.dimensions)

    def sample(self, rng: np.random.Generator, n: int) -> list:
        """n random configs, each dimension drawn independently: a list of n dicts."""
        columns = {name: dimension.sample(rng, n) for name, dimension in self.dimensions.items()}
        return [{name: _plain(column[index]) for name, column in columns.items()} for index in range(n)]

    def grid(self, points) -> list:
        """Every combination of each dimension's grid (the Cartesian product), the first dimension varying slowest.

        ``points`` is the number of grid points per dimension: one int for all, or a dict name -> int.
        A grid of n points on each of d dimensions costs n**d trials.
        """
        if isinstance(points, dict):
            if set(points) != set(self.dimensions):
                raise ValueError(f"points: expected one entry per dimension {self.names}, got {sorted(points)}")
            per_dimension = {name: check_int(f"points[{name!r}]", points[name], minimum=2) for name in self.dimensions}
        else:
            check_int("points", points, minimum=2)
            per_dimension = {name: points for name in self.dimensions}
        axes = [dimension.grid(per_dimension[name]) for name, dimension in self.dimensions.items()]
        return [{name: _plain(value) for name, value in zip(self.names, values)} for values in itertools.product(*axes)]

    def __repr__(self) -> str:
        return f"SearchSpace({self.dimensions!r})"


def _check_configs(configs) -> list:
    if not isinstance(configs, list) or not all(isinstance(config, dict) for config in configs):
        raise TypeError("configs: expected a list of dicts (one config each)")
    return configs


class Pool:
    """A finite search space: a list of configs, drawn from WITHOUT replacement.

    Train every config of the pool once (``evaluate_all``), and a cached objective answers any
    search over the pool for free: a search can then be repeated many times to measure its spread.
    """

    def __init__(self, configs: list):
        _check_configs(configs)
        if not configs:
            raise ValueError("configs: expected at least one config, got an empty list")
        self.configs = [dict(config) for config in configs]

    @property
    def names(self) -> list:
        return list(self.configs[0])

    def sample(self, rng: np.random.Generator, n: int) -> list:
        """n distinct configs of the pool, in random order."""
        check_int("n", n, minimum=1)
        if n > len(self.configs):
            raise ValueError(f"n: expected at most {len(self.configs)} (the pool's size; drawn without "
                             f"replacement), got {n}")
        return [dict(self.configs[index]) for index in _check_rng(rng).choice(len(self.configs), n, replace=False)]

    def __len__(self) -> int:
        return len(self.configs)


# --- The objective interface: a config and a budget (epochs) in, a score and its learning curve out ---

def _check_score(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite real number, got {value!r}")
    return float(value)


@dataclass
class TrialResult:
    """What an objective returns: ``score`` (higher is better) and ``curve`` (budget,), the score
    after each epoch 1..budget, so that ``curve[-1] == score``."""

    score: float
    curve: np.ndarray

    def __post_init__(self):
        self.score = _check_score("score", self.score)
        self.curve = check_array("curve", np.asarray(self.curve, dtype=float), ndim=1)
        if len(self.curve) == 0 or self.curve[-1] != self.score:
            raise ValueError(f"curve: expected the score after each epoch, ending with score={self.score}")


def evaluate_all(objective, configs: list, budget: int) -> list:
    """Each config trained for ``budget`` epochs: a list of TrialResult, in the order of ``configs``.

    An objective with a ``many`` method (as MLPObjective) gets all configs in one call, so that it
    can train them as one batched run; any other callable is called once per config.
    """
    if not callable(objective):
        raise TypeError(f"objective: expected a function (config, budget) -> TrialResult, got {type(objective).__name__}")
    _check_configs(configs)
    check_int("budget", budget, minimum=1)
    many = getattr(objective, "many", None)
    results = many(configs, budget) if many is not None else [objective(config, budget) for config in configs]
    for result in results:
        if not isinstance(result, TrialResult):
            raise TypeError(f"objective: expected it to return a TrialResult, got {type(result).__name__}")
        if len(result.curve) != budget:
            raise ValueError(f"objective: expected a curve of {budget} epochs (the budget), got {len(result.curve)}")
    return results


# The search chapter is not about normalization: its batch norm is torch's own, nn.BatchNorm1d.
NORMS = {None: None, "batch": nn.BatchNorm1d}


class MLPObjective:
    """Validation accuracy of the chapter's model, ``mlp([D, width, width, C])``, trained with plain SGD.

    ``config["lr"]`` is the learning rate and ``config.get("weight_decay", 0)`` the weight decay;
    ``budget`` is the number of epochs; ``norm`` is None or "batch" (``nn.BatchNorm1d`` after each hidden layer).
    ``objective(config, budget)`` trains one config; ``objective.many(configs, budget)`` trains them
    all as one batched run (``lib.train.train_seeds`` with ``SeedwiseSGD``).

    A config's seed (its initialization and mini-batch order) is derived from its values and
    ``seed``, so a config gets the same result whichever search asks for it, alone or in a batch
    (equal up to rounding: batched kernels add in another order). Results are cached: the rate is
    constant, so the first b epochs of a longer run are the run of budget b, and a cached longer
    curve answers a shorter budget. ``epochs_trained`` counts the epochs really trained (cache hits
    are free). A run that diverges (its loss becomes NaN) scores chance, 1 / classes, from then on.
    """

    def __init__(self, data: Splits, width: int = 64, batch_size: int = 128, seed: int = 0, norm: str | None = None):
        if not isinstance(data, Splits):
            raise TypeError(f"data: expected lib.data.Splits, got {type(data).__name__}")
        self.data = data
        self.width = check_int("width", width, minimum=1)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.norm = check_choice("norm", norm, tuple(NORMS))
        self.classes = int(data.y_train.max()) + 1
        self.epochs_trained = 0
        self._curves = {}   # (lr, weight_decay) -> validation accuracy after each epoch, the longest trained

    def _key(self, config: dict) -> tuple[float, float]:
        if not isinstance(config, dict) or "lr" not in config:
            raise ValueError(f"config: expected a dict with 'lr' (and optionally 'weight_decay'), got {config!r}")
        unknown = sorted(set(config) - {"lr", "weight_decay"})
        if unknown:
            raise ValueError(f"config: MLPObjective tunes 'lr' and 'weight_decay' only, got {unknown}")
        return (check_positive("config['lr']", config["lr"]),
                check_positive("config['weight_decay']", config.get("weight_decay", 0.0), allow_zero=True))

    def config_seed(self, config: dict) -> int:
        """The seed of a config's run: a hash of its values and ``seed`` (the same in every process), < 2**31."""
        text = repr((self.seed, *self._key(config)))
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") % 2**31

    def __call__(self, config: dict, budget: int) -> TrialResult:
        return self.many([config], budget)[0]

    def many(self, configs: list, budget: int) -> list:
        """Each config trained for ``budget`` epochs, the uncached ones as one batched run: a list of TrialResult."""
        keys = [self._key(config) for config in _check_configs(configs)]
        check_int("budget", budget, minimum=1)
        missing = self._missing(keys, budget)
        if missing:
            _train_pairs([(self, key) for key in missing], budget)
        return [TrialResult(self._curves[key][budget - 1], self._curves[key][:budget]) for key in keys]

    def _missing(self, keys: list, budget: int) -> list:
        """The distinct keys among ``keys`` whose cached curve is shorter than ``budget``."""
        return [key for key in dict.fromkeys(keys) if len(self._curves.get(key, ())) < budget]

    def _setup(self) -> tuple:
        """What a batched run shares: the data, the network and the mini-batch size (not the seed)."""
        return id(self.data), self.width, self.norm, self.batch_size

    def build_model(self) -> nn.Sequential:
        """A fresh network of this objective: ``mlp([D, width, width, C])``, ``nn.BatchNorm1d`` if ``norm="batch"``."""
        return mlp([self.data.x_train.shape[1], self.width, self.width, self.classes], norm=NORMS[self.norm])


def _train_pairs(pairs: list, budget: int) -> None:
    """Train each (MLPObjective, key) pair for ``budget`` epochs, all in one batched run; cache the curves.

    The objectives share one setup (``_setup``); each pair trains under its own objective's seed
    for that config, so it gets what that objective alone would train.
    """
    seeds = [objective.config_seed({"lr": lr, "weight_decay": decay}) for objective, (lr, decay) in pairs]
    if len(set(seeds)) < len(seeds):  # two pairs whose hashes collide: train_seeds needs distinct seeds
        for pair in pairs:
            _train_pairs([pair], budget)
        return
    first = pairs[0][0]
    _, histories = train_seeds(
        first.build_model, first.data,
        lambda params: SeedwiseSGD(params, [lr for _, (lr, _) in pairs], [decay for _, (_, decay) in pairs]),
        seeds, epochs=budget, batch_size=first.batch_size,
        eval_every=len(first.data.y_train) // first.batch_size, progress=False)
    for (objective, key), history in zip(pairs, histories):
        curve = np.full(budget, 1.0 / objective.classes)  # a diverged run stops recording: chance from then on
        after_epochs = history.val_acc[1:]                # record 0 is before the first update
        curve[: len(after_epochs)] = after_epochs
        objective._curves[key] = curve
        objective.epochs_trained += budget


def evaluate_over_seeds(objectives: list, configs: list, budget: int) -> np.ndarray:
    """The score of each config under each objective, ``(len(objectives), len(configs))``.

    ``objectives`` are MLPObjectives that differ only in ``seed`` (same data, width, norm and
    batch size). Row i is what ``objectives[i].many(configs, budget)`` gives, but every
    (objective, config) pair not yet cached trains in ONE batched run rather than one run per
    objective: many small runs cost more per config than one large one. Each objective's cache
    is filled, so its later calls on these configs are free.
    """
    if not isinstance(objectives, (list, tuple)) or not objectives:
        raise TypeError(f"objectives: expected a non-empty list of MLPObjective, got {objectives!r}")
    for objective in objectives:
        if not isinstance(objective, MLPObjective):
            raise TypeError(f"objectives: expected MLPObjective entries, got {type(objective).__name__}")
    if len({objective._setup() for objective in objectives}) > 1:
        raise ValueError("objectives: expected the same data, width, norm and batch_size (only seed may differ)")
    keys = [objectives[0]._key(config) for config in _check_configs(configs)]
    check_int("budget", budget, minimum=1)
    pairs = [(objective, key) for objective in dict.fromkeys(objectives) for key in objective._missing(keys, budget)]
    if pairs:
        _train_pairs(pairs, budget)
    return np.array([[result.score for result in objective.many(configs, budget)] for objective in objectives])


# --- Searches and their results ---

@dataclass
class Trial:
    """One evaluated config: ``number`` (order of evaluation), the config, its budget (epochs),
    its score and its curve (budget,)."""

    number: int
    config: dict
    budget: int
    score: float
    curve: np.ndarray


class SearchResult:
    """The trials of one search, in the order they were evaluated."""

    def __init__(self, method: str, trials: list):
        if not isinstance(method, str):
            raise TypeError(f"method: expected a string such as 'random', got {type(method).__name__}")
        if not isinstance(trials, list) or not all(isinstance(trial, Trial) for trial in trials):
            raise TypeError("trials: expected a list of Trial")
        if not trials:
            raise ValueError("trials: expected at least one trial, got an empty list")
        self.method, self.trials = method, trials

    def scores(self) -> np.ndarray:
        """Each trial's score, shape (n,)."""
        return np.array([trial.score for trial in self.trials])

    def configs(self) -> list:
        return [trial.config for trial in self.trials]

    @property
    def best(self) -> Trial:
        """The trial with the highest score; of equal scores, the earliest."""
        return self.trials[int(np.argmax(self.scores()))]   # argmax returns the first of equal maxima

    @property
    def budget_used(self) -> int:
        """The epochs the search spent: the sum of its trials' budgets."""
        return sum(trial.budget for trial in self.trials)

    def best_so_far(self) -> tuple[np.ndarray, np.ndarray]:
        """``(budget_spent (n,), best_score (n,))``: after each trial, the budget spent so far and the best score yet."""
        budgets = np.cumsum([trial.budget for trial in self.trials])
        return budgets, np.maximum.accumulate(self.scores())

    def table(self, top: int | None = None) -> str:
        """A plain-text table of the trials, best first (``top``: only that many rows)."""
        if top is not None:
            check_int("top", top, minimum=1)
        names = list(dict.fromkeys(name for trial in self.trials for name in trial.config))
        order = sorted(self.trials, key=lambda trial: -trial.score)  # stable: equal scores keep their order
        header = ["trial", *names, "budget", "score"]
        rows = [[str(trial.number), *(_format_value(trial.config.get(name, "")) for name in names),
                 str(trial.budget), f"{trial.score:.3f}"] for trial in order[:top]]
        widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
        lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
        return f"{self.method} search, {len(self.trials)} trials, {self.budget_used} epochs\n" + "\n".join(lines)

    def __repr__(self) -> str:
        return f"SearchResult({self.method!r}, {len(self.trials)} trials, best score {self.best.score:.3f})"


def _format_value(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _trials(configs: list, budget: int, results: list, first_number: int = 0) -> list:
    """Trials numbered from ``first_number``, one per (config, result)."""
    return [Trial(first_number + index, config, budget, result.score, result.curve)
            for index, (config, result) in enumerate(zip(configs, results))]


def grid_search(objective, space: SearchSpace, points, budget: int) -> SearchResult:
    """Every config of ``space.grid(points)``, each trained for ``budget`` epochs."""
    if not isinstance(space, SearchSpace):
        raise TypeError(f"space: expected a SearchSpace, got {type(space).__name__}")
    configs = space.grid(points)
    return SearchResult("grid", _trials(configs, budget, evaluate_all(objective, configs, budget)))


def random_search(objective, space, n_trials: int, budget: int, seed: int = 0) -> SearchResult:
    """``n_trials`` configs drawn from ``space`` (a SearchSpace, or a Pool: without replacement)
    with ``np.random.default_rng(seed)``, each trained for ``budget`` epochs."""
    rng = _check_space_and_rng(space, seed)    # shared with successive halving (below)
    check_int("n_trials", n_trials, minimum=1)
    configs = space.sample(rng, n_trials)
    return SearchResult("random", _trials(configs, budget, evaluate_all(objective, configs, budget)))


# ---------------------------------------------------------------------------------------------
# Successive halving and Hyperband
# ---------------------------------------------------------------------------------------------


def _check_halving_arguments(min_budget: int, max_budget: int, eta: int) -> None:
    check_int("min_budget", min_budget, minimum=1)
    check_int("max_budget", max_budget, minimum=1)
    check_int("eta", eta, minimum=2)
    if min_budget > max_budget:
        raise ValueError(f"min_budget: expected at most max_budget = {max_budget}, got {min_budget}")


def halving_plan(n_configs: int, min_budget: int, max_budget: int, eta: int = 3) -> list:
    """The rungs of successive halving: a list of ``(n_i, r_i)``, rung i trains n_i configs to r_i epochs.

    Rung i keeps ``n_i = floor(n / eta^i)`` configs (the best 1/eta of the rung before) and trains
    them to ``r_i = r * eta^i`` epochs (r = ``min_budget``), up to the last rung, r_k = R
    (R = ``max_budget``). Example: n = 27, r = 1, R = 27, eta = 3 gives
    [(27, 1), (9, 3), (3, 9), (1, 27)], a budget of sum n_i r_i = 4 * 27 = 108 epochs.

    A search that never trains a config to R hands back no full-budget score, so a plan that
    would stop short of R is an error: R must be r * eta^k, and n at least eta^k (one config left).
    """
    check_int("n_configs", n_configs, minimum=1)
    _check_halving_arguments(min_budget, max_budget, eta)
    last = 0                                    # k: the index of the rung that trains to R
    while min_budget * eta**last < max_budget:
        last += 1
    if min_budget * eta**last != max_budget:
        raise ValueError(f"max_budget: expected min_budget * eta^k = {min_budget} * {eta}^k, so that the last rung "
                         f"trains to max_budget, got {max_budget}")
    if n_configs < eta**last:
        raise ValueError(f"n_configs: expected at least eta^{last} = {eta**last}, so that one config is left to "
                         f"train to max_budget = {max_budget}, got {n_configs}")
    return [(n_configs // eta**i, min_budget * eta**i) for i in range(last + 1)]


def _ranked(trials: list) -> list:
    # the trials of one rung, best score first; ties go to the earlier trial (a stable sort)
    order = np.argsort([-trial.score for trial in trials], kind="stable")
    return [trials[i] for i in order]


def _halve(objective, configs: list, rungs: list, first_number: int = 0) -> list:
    # Successive halving over the given configs: each rung is one evaluate_all call (one batched
    # run), and its best n_{i+1} go on to the next rung. Returns the trials of every rung, numbered on.
    trials, survivors = [], configs
    for n_i, r_i in rungs:
        survivors = survivors[:n_i]
        rung = _trials(survivors, r_i, evaluate_all(objective, survivors, r_i), first_number + len(trials))
        trials += rung
        survivors = [trial.config for trial in _ranked(rung)]
    return trials


def _check_space_and_rng(space, seed: int) -> np.random.Generator:
    if not isinstance(space, (SearchSpace, Pool)):
        raise TypeError(f"space: expected a SearchSpace or a Pool, got {type(space).__name__}")
    return np.random.default_rng(check_int("seed", seed, minimum=0))


def successive_halving(objective, space, n_configs: int, min_budget: int, max_budget: int, eta: int = 3,
                       seed: int = 0) -> SearchResult:
    """Successive halving (Jamieson & Talwalkar 2016): sample n configs, train all briefly, keep the best 1/eta.

    ``space`` draws ``n_configs`` configs (``space.sample(rng, n)``, rng seeded with ``seed``); the
    rungs are ``halving_plan(n_configs, min_budget, max_budget, eta)``. Each rung evaluates its
    n_i configs at r_i epochs with one ``evaluate_all`` call and passes its best n_{i+1} on.
    The result holds the trials of every rung; its ``.best`` is the best score seen at any rung,
    as Hyperband's Algorithm 1 returns it (the config with the best intermediate score).

    Budget accounting: every rung trains its survivors from scratch to r_i, as in Li et al.'s
    (2018) analysis, so ``budget_used = sum n_i r_i``. An implementation that resumes the
    survivors from their checkpoints pays only ``sum n_i (r_i - r_{i-1})`` (r_{-1} = 0).
    ``MLPObjective`` answers from its cache where it can, so its ``epochs_trained`` is the real cost.
    """
    rungs = halving_plan(n_configs, min_budget, max_budget, eta)
    rng = _check_space_and_rng(space, seed)
    configs = space.sample(rng, n_configs)
    return SearchResult("successive halving", _halve(objective, configs, rungs))


def hyperband_plan(max_budget: int, eta: int = 3, min_budget: int = 1) -> list:
    """Hyperband's brackets (Li et al. 2018, Algorithm 1): a list of s_max + 1 rung lists, bracket s first for s = s_max..0.

    With R = ``max_budget`` and r = ``min_budget``, s_max = floor(log_eta(R / r)). Bracket s runs
    successive halving on n = ceil((s_max + 1) / (s + 1) * eta^s) configs from r_s = R * eta^-s
    epochs up to R: the most aggressive bracket (s = s_max) starts many configs at r epochs, the
    last (s = 0) trains a few to R, as random search would. Every bracket spends about the same
    budget. R / r must be a power of eta, R = r * eta^s_max, so that every r_s is a whole number
    of epochs and the first bracket starts at r (else an error names the argument to change).
    For R = 81, eta = 3 the brackets are Table 1 of Li et al.: (81, 1) (27, 3) (9, 9) (3, 27) (1, 81);
    (34, 3) (11, 9) (3, 27) (1, 81); (15, 9) (5, 27) (1, 81); (8, 27) (2, 81); (5, 81).
    """
    _check_halving_arguments(min_budget, max_budget, eta)
    s_max = 0
    while min_budget * eta ** (s_max + 1) <= max_budget:     # floor(log_eta(R / r)) without float rounding
        s_max += 1
    if max_budget % eta**s_max:
        raise ValueError(f"max_budget: expected a multiple of eta^s_max = {eta**s_max}, so that every bracket "
                         f"starts at a whole number of epochs, got {max_budget}")
    if min_budget * eta**s_max != max_budget:   # else the first bracket would start above min_budget, unasked
        raise ValueError(f"min_budget: expected max_budget / eta^s_max = {max_budget // eta**s_max}, so that the "
                         f"first bracket starts at min_budget, got {min_budget}")
    brackets = []
    for s in range(s_max, -1, -1):
        n = -(-(s_max + 1) * eta**s // (s + 1))              # ceil((s_max + 1) / (s + 1) * eta^s), in integers
        brackets.append(halving_plan(n, max_budget // eta**s, max_budget, eta))
    return brackets


def hyperband(objective, space, max_budget: int, eta: int = 3, min_budget: int = 1, seed: int = 0) -> SearchResult:
    """Hyperband (Li et al. 2018): successive halving in every bracket of ``hyperband_plan``, one after another.

    Successive halving must choose between many configs trained briefly and a few trained long;
    Hyperband hedges by running every trade-off. Each bracket draws its own n configs from
    ``space`` (one rng, seeded with ``seed``, for all brackets). The result holds the trials of
    every rung of every bracket, numbered in order; ``budget_used`` is the sum of n_i r_i over all
    brackets (survivors retrained from scratch, as in ``successive_halving``).
    """
    brackets = hyperband_plan(max_budget, eta, min_budget)
    rng, trials = _check_space_and_rng(space, seed), []
    for rungs in brackets:
        configs = space.sample(rng, rungs[0][0])
        trials += _halve(objective, configs, rungs, first_number=len(trials))
    return SearchResult("hyperband", trials)


# ---------------------------------------------------------------------------------------------
# Learning-curve diagnosis
# ---------------------------------------------------------------------------------------------

# A learning curve read the way a practitioner reads it (Karpathy 2019, the Deep Learning Tuning
# Playbook): each rule below looks for one shape in a History's training and validation losses and
# returns a sentence with the numbers it measured, or None. ``diagnose`` tries them in the order of
# DIAGNOSIS_RULES, which is the order one would fix things: a run that fails at its start before one
# that fails at its end, the rate before the model. The thresholds are rules of thumb, set so that each
# shape's typical curve on MNIST-1D clears them with room to spare and its near misses do not (see
# tests/test_search_diagnosis.py and chapters/search/02_recipe.ipynb); other data may need others.
# Runs of those kinds naming themselves is therefore a consistency check, not a validation: a run
# that sits near a threshold (a loss just flattening) can be named differently from one seed to the next.

ADVICE = {
    "diverged": "lower the learning rate (or warm it up, or clip the gradients)",
    "bad_initialization": "fix the initialization: weights scaled for the depth and the activation (Kaiming or "
                          "Xavier), so that signals and gradients pass through the network from the first step",
    "decay_too_early": "decay the learning rate later, or by less: it was cut while the loss was still falling fast",
    "plateau": "decay the learning rate: a constant rate's noise may hold the loss above where a lower rate "
               "takes it (if the loss stays high after the decay, the model is the limit: see underfitting)",
    "underfitting": "a bigger model or less regularization: the model fits its training data no better than new data",
    "overfitting": "more regularization (weight decay, dropout, augmentation) or more data; stop at the best "
                   "validation loss meanwhile",
    "train_longer": "train longer: both losses were still falling when the run ended",
    "healthy": "nothing to fix in these curves; spend the budget on the search",
}
PATTERNS = tuple(ADVICE)
MIN_RECORDS = 8         # the rules compare a run's start, middle and last quarter: fewer records cannot show that
TAIL_FRACTION = 0.25    # "the end of the run": its last quarter, long enough to average a few records' noise
FLAT_SHARE = 0.04       # a loss whose last quarter brought less of its drop than this has flattened (see _plateau)


@dataclass(frozen=True)
class Diagnosis:
    """What ``diagnose`` read in a run: the ``pattern`` (one of PATTERNS), the ``advice`` for it, and the
    ``evidence``: a sentence with the measured numbers that made the rule fire."""

    pattern: str
    advice: str
    evidence: str

    def __str__(self) -> str:
        return f"{self.pattern}: {self.evidence} Advice: {self.advice}."


@dataclass(frozen=True)
class _Curves:
    """A History's records as arrays, each (T,): steps, training and validation loss, learning rate."""

    steps: np.ndarray
    train: np.ndarray
    val: np.ndarray
    lr: np.ndarray

    @property
    def start(self) -> float:
        """The training loss before any update (ln C for C classes when the initialization is right)."""
        return float(self.train[0])

    @property
    def tail(self) -> np.ndarray:
        """A mask (T,) of the records in the run's last TAIL_FRACTION of steps (at least two records)."""
        mask = self.steps >= self.steps[0] + (1 - TAIL_FRACTION) * (self.steps[-1] - self.steps[0])
        mask[-2:] = True
        return mask

    def tail_drop(self, values: np.ndarray) -> float:
        """How far ``values`` fell over the last quarter: the drop of a straight line fitted to its records
        there, so that one noisy record does not decide it. Negative when they rose."""
        steps, tail_values = self.steps[self.tail], values[self.tail]
        slope = np.polyfit(steps, tail_values, 1)[0]
        return float(-slope * (steps[-1] - steps[0]))

    def late_share(self, values: np.ndarray) -> float:
        """The share of the run's whole drop (first value minus lowest) that its last quarter brought:
        about 0.25 for a loss that falls at a steady pace, near 0 for one that has flattened; 0 if it never fell."""
        whole = values[0] - values.min()
        return self.tail_drop(values) / whole if whole > 0 else 0.0

    def train_at(self, step: float) -> float:
        """The training loss at ``step``, interpolated. A record's training loss averages the mini-batches
        since the record before (record 0: the whole training set, before any update), so it stands for
        the middle of that stretch, half a record earlier than its step."""
        middles = np.concatenate([self.steps[:1], (self.steps[:-1] + self.steps[1:]) / 2])
        return float(np.interp(step, middles, self.train))


def _as_curves(history) -> _Curves:
    if not isinstance(history, History):
        raise TypeError(f"history: expected a lib.train.History, got {type(history).__name__}")
    lengths = {len(history.steps), len(history.train_loss), len(history.val_loss), len(history.lr)}
    if len(lengths) != 1:
        raise ValueError("history: expected steps, train_loss, val_loss and lr of one length each, "
                         f"got {len(history.steps)}, {len(history.train_loss)}, {len(history.val_loss)}, "
                         f"{len(history.lr)}")
    if len(history.steps) < MIN_RECORDS:
        raise ValueError(f"history: expected at least {MIN_RECORDS} records to read a curve from, "
                         f"got {len(history.steps)}")
    return _Curves(*(np.asarray(values, dtype=float) for values in
                     (history.steps, history.train_loss, history.val_loss, history.lr)))


def _diverged(history, curves: _Curves):
    """The run stopped on a NaN or infinite loss, or recorded one."""
    if history.diverged or not (np.isfinite(curves.train).all() and np.isfinite(curves.val).all()):
        return f"The loss became NaN or infinite; the last record is at step {int(curves.steps[-1])}."
    return None


def _bad_initialization(curves: _Curves, flat_tolerance: float = 0.02, min_flat_fraction: float = 0.1,
                        min_drop: float = 0.1):
    """Flat at its start value for a while, then a drop.

    flat_tolerance: "flat" = within 2% of the start value, about the noise of a record of averaged
        mini-batch losses. min_flat_fraction: for at least 10% of the run; every run starts flat for a
        few steps, and a short flat start costs little. min_drop: then, within a stretch as long again,
        the loss falls by 10% of its start value, 5 times the flat tolerance: a change of pace, not a
        small rate's slow start, which goes on at the same slow pace.
    """
    below = np.nonzero(curves.train < (1 - flat_tolerance) * curves.start)[0]
    if len(below) == 0:
        return None
    flat_until = curves.steps[below[0] - 1]
    if flat_until < min_flat_fraction * curves.steps[-1]:
        return None
    drop = curves.train_at(flat_until) - curves.train_at(2 * flat_until)
    if drop < min_drop * curves.start:
        return None
    return (f"The training loss stayed within {flat_tolerance:.0%} of its start value {curves.start:.3f} "
            f"for {int(flat_until)} of {int(curves.steps[-1])} steps, then fell by {drop:.3f} "
            f"({drop / curves.start:.0%} of it) in the next {int(flat_until)}.")


def _decay_too_early(curves: _Curves, decay_factor: float = 2.0, window_fraction: float = 0.1,
                     slowdown: float = 3.0):
    """A step decay of the rate, after which the training loss falls much more slowly than just before.

    decay_factor: a "step" decay cuts the rate by at least 2 from one record to the next (a smooth
        schedule moves far less between records, until its very end). window_fraction: the pace is
        measured over 10% of the run on each side of the decay, so that it is the pace at the decay,
        not the fast start of every run. slowdown: the loss falls at least 3 times more slowly after
        than before. A decay at the right time does the opposite: the loss had flattened, and it drops
        at once when the rate's noise is removed.
    The pace is read from the records, so the cut should fall on one (an epoch-wise schedule with a
    record every epoch does): a record that averages mini-batches from both sides of the cut blurs it.
    """
    cuts = np.nonzero(curves.lr[1:] <= curves.lr[:-1] / decay_factor)[0]
    if len(cuts) == 0:
        return None
    decay_step = curves.steps[cuts[0]]   # the last record at the old rate: what follows it shows the cut's effect
    window = min(window_fraction * curves.steps[-1], decay_step - curves.steps[0], curves.steps[-1] - decay_step)
    if window <= 0:
        return None
    loss_at_decay = curves.train_at(decay_step)
    before = curves.train_at(decay_step - window) - loss_at_decay
    after = loss_at_decay - curves.train_at(decay_step + window)
    if before <= 0 or after * slowdown > before:
        return None
    return (f"The rate fell from {curves.lr[cuts[0]]:.3g} to {curves.lr[cuts[0] + 1]:.3g} after step "
            f"{int(decay_step)} of {int(curves.steps[-1])}; the training loss fell by {before:.3f} in the "
            f"{int(window)} steps before and by {after:.3f} in the {int(window)} after.")


def _ends_flat_and_high(curves: _Curves, flat_share: float, high_loss: float):
    """(drop over the last quarter, mean training loss there) if the run ends flat and high, else None."""
    drop, level = curves.tail_drop(curves.train), float(curves.train[curves.tail].mean())
    if curves.late_share(curves.train) >= flat_share or level < high_loss * curves.start:
        return None
    return drop, level


def _plateau(curves: _Curves, flat_share: float = FLAT_SHARE, high_loss: float = 0.5, min_drop: float = 0.1):
    """Drops, then flat at a high loss, the rate constant all along.

    flat_share: the last quarter brought less than 4% of the training loss's whole drop, a sixth of
        what a steady pace brings (25%): more of the same steps would buy little. high_loss: and it
        stays above half of its start value: a model that fits its data halves the loss of chance (other
        data may need another fraction). min_drop: it did drop first, by at least 10% of its start value.
    One curve cannot tell a floor set by the rate's noise from the limit of the model: both are flat
    and high. A constant rate is the cheaper suspect, since decaying it is one run, so a run that never
    decayed its rate is called a plateau; if the loss stays high after a decay, ``_underfitting`` says so.
    """
    flat_and_high = _ends_flat_and_high(curves, flat_share, high_loss)
    if flat_and_high is None or curves.start - curves.train.min() < min_drop * curves.start:
        return None
    if curves.lr.min() < curves.lr.max():
        return None
    drop, level = flat_and_high
    return (f"The training loss fell from {curves.start:.3f} to {level:.3f} and then changed by only "
            f"{-drop:+.3f} over the last quarter, at a rate that stayed {curves.lr[-1]:.3g} all along.")


def _underfitting(curves: _Curves, flat_share: float = FLAT_SHARE, high_loss: float = 0.5,
                  gap_tolerance: float = 0.05):
    """Flat at a high loss, with no gap between training and validation loss.

    flat_share, high_loss: as in ``_plateau``. gap_tolerance: over the last quarter the validation
        loss is within 5% of the training loss: the model does no better on the examples it trains on
        than on new ones, so it has not fitted them.
    """
    flat_and_high = _ends_flat_and_high(curves, flat_share, high_loss)
    if flat_and_high is None:
        return None
    drop, level = flat_and_high
    gap = float(curves.val[curves.tail].mean()) - level
    if abs(gap) > gap_tolerance * level:
        return None
    return (f"Over the last quarter the training loss stayed at {level:.3f} (it changed by {-drop:+.3f}; its "
            f"start value was {curves.start:.3f}) and the validation loss was within {abs(gap):.3f} of it.")


def _overfitting(curves: _Curves, rise_tolerance: float = 0.05, min_train_fall: float = 0.02):
    """The validation loss turned up while the training loss kept falling: the gap between them grew.

    rise_tolerance: over the last quarter the validation loss is on average 5% above its lowest value,
        more than the record-to-record noise of a validation loss on a few hundred examples.
    min_train_fall: meanwhile the training loss fell by at least 2% of its start value, more than the
        noise of a record of averaged mini-batch losses (as ``_bad_initialization``'s flat_tolerance).
    """
    best = int(np.argmin(curves.val))
    val_end, train_end = float(curves.val[curves.tail].mean()), float(curves.train[curves.tail].mean())
    rise, train_fall = val_end - curves.val[best], curves.train[best] - train_end
    if rise < rise_tolerance * curves.val[best] or train_fall < min_train_fall * curves.start:
        return None
    return (f"The validation loss was lowest, {curves.val[best]:.3f}, at step {int(curves.steps[best])} and "
            f"{val_end:.3f} over the last quarter (+{rise / curves.val[best]:.0%}), while the training loss fell "
            f"from {curves.train[best]:.3f} to {train_end:.3f}: the gap grew from "
            f"{curves.val[best] - curves.train[best]:.3f} to {val_end - train_end:.3f}.")


def _train_longer(curves: _Curves, flat_share: float = FLAT_SHARE):
    """Both losses still falling at the end.

    flat_share: as in ``_plateau``: the last quarter brought at least 4% of each loss's whole drop,
        so the run stopped while it was still making progress that more steps would extend.
    """
    train_share, val_share = curves.late_share(curves.train), curves.late_share(curves.val)
    if min(train_share, val_share) < flat_share:
        return None
    return (f"The last quarter still brought {train_share:.0%} of the training loss's drop (it fell by "
            f"{curves.tail_drop(curves.train):.3f} there) and {val_share:.0%} of the validation loss's "
            f"(by {curves.tail_drop(curves.val):.3f}).")


DIAGNOSIS_RULES = (("bad_initialization", _bad_initialization), ("decay_too_early", _decay_too_early),
                   ("plateau", _plateau), ("underfitting", _underfitting), ("overfitting", _overfitting),
                   ("train_longer", _train_longer))


def diagnose(history: History) -> Diagnosis:
    """Name the pattern of a run's learning curves, with the advice for it and the evidence.

    ``history`` is a ``lib.train.History`` with at least MIN_RECORDS records (steps, train_loss,
    val_loss, lr; one entry per record). A run that diverged is "diverged"; otherwise the rules of
    DIAGNOSIS_RULES are tried in order, from the start of the run to its end, and the first that
    fires names it: "bad_initialization", "decay_too_early", "plateau", "underfitting",
    "overfitting", "train_longer". If none does, the run is "healthy". A run that never leaves its
    start value is called underfitting (if its validation loss stays level with the training loss),
    whatever held it back: the model, or a rate or weights far too small; check all three.
    """
    curves = _as_curves(history)
    evidence = _diverged(history, curves)
    if evidence is not None:
        return Diagnosis("diverged", ADVICE["diverged"], evidence)
    for pattern, rule in DIAGNOSIS_RULES:
        evidence = rule(curves)
        if evidence is not None:
            return Diagnosis(pattern, ADVICE[pattern], evidence)
    return Diagnosis("healthy", ADVICE["healthy"], _healthy_evidence(curves))


def _healthy_evidence(curves: _Curves) -> str:
    """A run no rule named, with its numbers nearest to a threshold: the share of each loss's drop that
    the last quarter brought, against "train longer"'s FLAT_SHARE. A run close to it may be named
    "train_longer" on another seed: the label is a threshold's verdict, the shares are the measurement."""
    train_share, val_share = curves.late_share(curves.train), curves.late_share(curves.val)
    return (f"No rule fired: the training loss went from {curves.start:.3f} to {curves.train[-1]:.3f} and the "
            f"validation loss ended at {curves.val[-1]:.3f}, without a flat start, an early decay, a plateau or a "
            f"turn of the validation loss; the last quarter brought {train_share:.0%} of the training loss's drop "
            f"and {val_share:.0%} of the validation loss's (train longer needs {FLAT_SHARE:.0%} of each).")


# ---------------------------------------------------------------------------------------------
# Search at scale: Optuna
# ---------------------------------------------------------------------------------------------

# Optuna runs the searches for real: a study holds the trials, a sampler proposes each trial's
# config (random, or TPE, which models where the good configs were), a pruner stops a trial whose
# learning curve lags the others', and a storage (a database) keeps the study, so that a search
# survives a restart and several processes, or machines, can share it.

SAMPLERS = {"random": optuna.samplers.RandomSampler, "tpe": optuna.samplers.TPESampler,
            "grid": optuna.samplers.GridSampler}
PRUNERS = {"median": optuna.pruners.MedianPruner, "halving": optuna.pruners.SuccessiveHalvingPruner,
           "none": optuna.pruners.NopPruner}
STORAGE_KINDS = ("sqlite:///", "postgresql://", "postgresql+psycopg://")
DIRECTIONS = ("maximize", "minimize")


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict:
    """One config of ``space``, each value asked of ``trial`` with Optuna's own call for its scale.

    LogUniform -> ``suggest_float(log=True)`` (so the sampler works on log(value), as random search
    draws it), Uniform -> ``suggest_float``, IntUniform -> ``suggest_int``, Categorical ->
    ``suggest_categorical``. The dict has the space's names in its order.
    """
    if not isinstance(space, SearchSpace):
        raise TypeError(f"space: expected a SearchSpace, got {type(space).__name__}")
    config = {}
    for name, dimension in space.dimensions.items():
        if isinstance(dimension, Categorical):
            config[name] = trial.suggest_categorical(name, dimension.choices)
        elif isinstance(dimension, IntUniform):
            config[name] = trial.suggest_int(name, dimension.low, dimension.high)
        else:
            config[name] = trial.suggest_float(name, dimension.low, dimension.high,
                                               log=isinstance(dimension, LogUniform))
    return config


def make_sampler(sampler: str, seed: int = 0, **options) -> optuna.samplers.BaseSampler:
    """Optuna's sampler named ``sampler``, seeded: "random", "tpe" or "grid".

    ``options`` go to Optuna's class unchanged: e.g. ``n_startup_trials=5`` (TPE's random trials
    before it starts modelling), or the "grid" sampler's required ``search_space={name: [values]}``.
    """
    check_choice("sampler", sampler, tuple(SAMPLERS))
    return SAMPLERS[sampler](seed=check_int("seed", seed, minimum=0), **options)


def make_pruner(pruner: str, **options) -> optuna.pruners.BasePruner:
    """Optuna's pruner named ``pruner``: "median" (MedianPruner), "halving" (SuccessiveHalvingPruner,
    asynchronous successive halving) or "none" (NopPruner). ``options`` go to Optuna's class unchanged."""
    check_choice("pruner", pruner, tuple(PRUNERS))
    return PRUNERS[pruner](**options)


def _check_study_name(study_name) -> str:
    if not isinstance(study_name, str):
        raise TypeError(f"study_name: expected a string, got {type(study_name).__name__}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", study_name):
        raise ValueError(f"study_name: expected letters, digits, '_' or '-' (it names a file), got {study_name!r}")
    return study_name


def default_storage(study_name: str) -> str:
    """The SQLite URL of a study's own file in the book's cache: ``sqlite:///<cache>/studies/<name>.db``.

    The cache is lib.data's (``$DLBOOK_CACHE``, default ``~/.cache/dlbook``). The folder is created
    here: SQLite creates a missing database file, not a missing folder.
    """
    _check_study_name(study_name)
    directory = cache_dir() / "studies"
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / study_name}.db"


def make_storage(storage: str, heartbeat_interval: int | None = None) -> optuna.storages.RDBStorage:
    """Optuna's database storage for the URL ``storage``: ``sqlite:///<file>`` (one machine),
    ``postgresql://user:password@host:port/database`` or the same with ``postgresql+psycopg://``
    (a server that workers on several machines share).

    ``heartbeat_interval`` (seconds; None: off): a process running a trial writes a heartbeat
    this often. A process killed mid-trial leaves its trial RUNNING forever; with heartbeats on,
    the next trial any process starts finds the trial's heartbeat older than two intervals, marks
    it FAIL and queues a retry with the same config (Optuna's RetryHeartbeatStaleTrialCallback,
    one retry per trial). The killed process must have had them on too: its trial has no heartbeat
    otherwise.
    """
    if heartbeat_interval is not None:
        check_int("heartbeat_interval", heartbeat_interval, minimum=1)
    if not isinstance(storage, str):
        raise TypeError(f"storage: expected a database URL (str), got {type(storage).__name__}")
    if not storage.startswith(STORAGE_KINDS):
        # only the scheme is shown: the rest of a URL may hold a password
        raise ValueError(f"storage: expected a URL starting with {', '.join(STORAGE_KINDS)}, "
                         f"got one starting with {storage.split(':', 1)[0]!r}")
    heartbeat = {} if heartbeat_interval is None else dict(
        heartbeat_interval=heartbeat_interval,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
    if storage.startswith("sqlite:///"):
        # a process waits up to 60 s (Python's default: 5 s) while another one writes, instead of
        # failing with "database is locked": SQLite lets one writer at a time in
        return optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 60}}, **heartbeat)
    # SQLAlchemy reads a bare postgresql:// as the psycopg2 driver; the book installs psycopg 3
    url = storage.replace("postgresql://", "postgresql+psycopg://", 1)
    # pool_pre_ping: a worker that trained for an hour checks its connection before using it
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, **heartbeat)


def _sampler_of(sampler, seed: int) -> optuna.samplers.BaseSampler:
    return sampler if isinstance(sampler, optuna.samplers.BaseSampler) else make_sampler(sampler, seed)


def _pruner_of(pruner) -> optuna.pruners.BasePruner:
    return pruner if isinstance(pruner, optuna.pruners.BasePruner) else make_pruner(pruner)


def create_study(name: str, storage: str | None = None, sampler="tpe", pruner="median", seed: int = 0,
                 direction: str = "maximize", heartbeat_interval: int | None = None) -> optuna.Study:
    """The Optuna study ``name`` in ``storage`` (a URL; None: ``default_storage(name)``), created,
    or loaded if the storage already holds it: a stopped search resumes where it stopped.

    ``sampler`` and ``pruner`` are names (see ``make_sampler``, ``make_pruner``) or Optuna objects;
    a named sampler is seeded with ``seed``. A storage keeps the trials, not the sampler: each
    process that loads the study brings its own. A loaded study must have been created with the
    same ``direction`` (Optuna itself would quietly keep the stored one). ``heartbeat_interval``:
    see ``make_storage``; give it to every process of a study, or to none.
    """
    check_choice("direction", direction, DIRECTIONS)
    url = default_storage(name) if storage is None else storage
    study = optuna.create_study(study_name=_check_study_name(name), storage=make_storage(url, heartbeat_interval),
                                sampler=_sampler_of(sampler, seed), pruner=_pruner_of(pruner),
                                direction=direction, load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise ValueError(f"direction: the stored study {name!r} was created to "
                         f"{study.direction.name.lower()}, got direction={direction!r}")
    return study


class ValidationPruning:
    """A ``record`` callback for ``lib.train.train`` that reports each validation check to an Optuna
    trial and ends the run when the trial's pruner says so.

    ``train(..., record=ValidationPruning(trial, data))`` calls it at every check: check k
    (k = 1, 2, ...; with ``eval_every`` = one epoch, after epoch k) reports the validation accuracy
    as step k; the check at step 0, before any update, is not reported (every config starts at
    chance). When ``trial.should_prune()``, it raises ``optuna.TrialPruned``, which leaves ``train``
    and marks the trial PRUNED. At ``last_check`` (the run's final check, if given) it reports but
    never prunes: the run is paid for by then, and its result counts (as in ``CurveReplay``).
    """

    def __init__(self, trial: optuna.Trial, data: Splits, last_check: int | None = None):
        if not isinstance(data, Splits):
            raise TypeError(f"data: expected lib.data.Splits, got {type(data).__name__}")
        if last_check is not None:
            check_int("last_check", last_check, minimum=1)
        self.trial, self.data, self.last_check, self.checks = trial, data, last_check, 0

    def __call__(self, model: nn.Module) -> dict:
        check = self.checks
        self.checks += 1
        if check == 0:
            return {}
        # train hands record the model only, so the accuracy is measured again here: the same
        # evaluate on the same split, so it equals history.val_acc at this check
        parameter = next(model.parameters())
        _, val_acc = evaluate(model, *to_tensors(self.data.x_val, self.data.y_val, parameter.device, parameter.dtype))
        self.trial.report(val_acc, check)
        if check != self.last_check and self.trial.should_prune():
            raise optuna.TrialPruned(f"validation accuracy {val_acc:.3f} at check {check}")
        return {}


def _check_objective_budget(space, budget: int) -> None:
    if not isinstance(space, SearchSpace):
        raise TypeError(f"space: expected a SearchSpace, got {type(space).__name__}")
    check_int("budget", budget, minimum=1)


class TrainedMLP:
    """An Optuna objective: train the config a trial suggests from ``space`` for ``budget`` epochs,
    the validation checks (one per epoch) handed to the trial's pruner; return the last validation
    accuracy.

    The run is ``objective``'s (an MLPObjective): its model, plain SGD with ``lr`` and
    ``weight_decay``, its batch size and the config's seed, but trained by ``lib.train.train``, one
    config at a time, so that the pruner can stop it between epochs. A run that diverges scores
    chance, as in MLPObjective. It holds only numbers and arrays, so it pickles: ``run_workers``
    sends it to worker processes.
    """

    def __init__(self, objective: MLPObjective, space: SearchSpace, budget: int):
        if not isinstance(objective, MLPObjective):
            raise TypeError(f"objective: expected an MLPObjective, got {type(objective).__name__}")
        _check_objective_budget(space, budget)
        self.objective, self.space, self.budget = objective, space, budget

    def __call__(self, trial: optuna.Trial) -> float:
        config = suggest(trial, self.space)
        run, data = self.objective, self.objective.data
        seed = run.config_seed(config)
        set_seed(seed)
        model = run.build_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], weight_decay=config.get("weight_decay", 0.0))
        history = train(model, data, optimizer, epochs=self.budget, batch_size=run.batch_size,
                        eval_every=len(data.y_train) // run.batch_size, seed=seed,
                        record=ValidationPruning(trial, data, last_check=self.budget), progress=False)
        return 1.0 / run.classes if history.diverged else history.val_acc[-1]


class CurveReplay:
    """An Optuna objective made of any ``objective(config, budget) -> TrialResult``: the trial's
    config is evaluated whole, then its curve is reported epoch by epoch (step k = epoch k) and the
    pruner may stop it at any epoch.

    The epochs the trial would have used (its budget, or the epoch it was pruned at) are stored in
    ``trial.user_attrs["epochs"]``. Pruning saves nothing here: the curve is already paid for. This
    is for objectives that cost nothing, such as ``TableObjective``, to measure what a pruner would
    save, and to repeat a study many times. ``seconds_per_epoch`` > 0 replays each epoch at that
    pace (a sleep, no computing), so that workers sharing a study run their trials at the same
    time, as they would while training.
    """

    def __init__(self, objective, space: SearchSpace, budget: int, seconds_per_epoch: float = 0.0):
        if not callable(objective):
            raise TypeError(f"objective: expected a function (config, budget) -> TrialResult, "
                            f"got {type(objective).__name__}")
        _check_objective_budget(space, budget)
        self.objective, self.space, self.budget = objective, space, budget
        self.seconds_per_epoch = check_positive("seconds_per_epoch", seconds_per_epoch, allow_zero=True)

    def __call__(self, trial: optuna.Trial) -> float:
        (result,) = evaluate_all(self.objective, [suggest(trial, self.space)], self.budget)
        for epoch, score in enumerate(result.curve, start=1):
            time.sleep(self.seconds_per_epoch)
            trial.report(float(score), epoch)
            if epoch < self.budget and trial.should_prune():
                trial.set_user_attr("epochs", epoch)
                raise optuna.TrialPruned(f"score {score:.3f} after epoch {epoch}")
        trial.set_user_attr("epochs", self.budget)
        return result.score


class TableObjective:
    """An objective answered from a table of real learning curves: the trials of a grid search over
    positive, log-scaled hyperparameters (``grid_search``'s result), interpolated in between.

    A config between grid points gets the curve interpolated linearly in log(value) along each
    dimension (``scipy.interpolate.RegularGridInterpolator``); outside the grid is an error. Each
    call costs nothing, so a search can be repeated many times on curves that real runs produced.
    A budget up to the grid's own is answered (curves are cut to it).
    """

    def __init__(self, grid: SearchResult):
        if not isinstance(grid, SearchResult):
            raise TypeError(f"grid: expected grid_search's SearchResult, got {type(grid).__name__}")
        self.names = list(grid.trials[0].config)
        axes = [np.unique([trial.config[name] for trial in grid.trials]) for name in self.names]
        if len(grid.trials) != math.prod(len(axis) for axis in axes) or min(map(len, axes)) < 2:
            raise ValueError("grid: expected every combination of at least 2 values per dimension (a full grid)")
        if any(axis[0] <= 0 for axis in axes):
            raise ValueError("grid: expected positive values only (interpolation is on a log scale)")
        self.budget = min(trial.budget for trial in grid.trials)
        curves = np.empty([len(axis) for axis in axes] + [self.budget])
        for trial in grid.trials:
            index = tuple(int(np.searchsorted(axis, trial.config[name])) for axis, name in zip(axes, self.names))
            curves[index] = trial.curve[: self.budget]
        self.interpolate = RegularGridInterpolator([np.log(axis) for axis in axes], curves)

    def __call__(self, config: dict, budget: int) -> TrialResult:
        check_int("budget", budget, minimum=1)
        if budget > self.budget:
            raise ValueError(f"budget: expected at most {self.budget} epochs (the table's), got {budget}")
        if not isinstance(config, dict) or set(config) != set(self.names):
            raise ValueError(f"config: expected a dict with keys {self.names}, got {config!r}")
        point = [math.log(check_positive(f"config[{name!r}]", config[name])) for name in self.names]
        curve = self.interpolate(point)[0][:budget]   # ValueError outside the grid
        return TrialResult(float(curve[-1]), curve)


def _work(study_name: str, storage: str, objective, n_trials: int, sampler: str, pruner: str, seed: int,
          direction: str, verbosity: int, all_ready) -> None:
    """One worker process: load the study and run ``n_trials`` trials of it, each marked with this process's id."""
    optuna.logging.set_verbosity(verbosity)
    tune_for_small_models(torch.device("cpu"))   # one torch thread per worker: the workers share the cores
    study = create_study(study_name, storage, sampler=sampler, pruner=pruner, seed=seed, direction=direction)
    # start the trials together: a fresh Python takes seconds, and a varying number of them, to import
    # torch, so with short trials a late worker would find the other one finished
    all_ready.wait(timeout=300)

    def marked(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker_pid", os.getpid())
        return objective(trial)

    study.optimize(marked, n_trials=n_trials)


def run_workers(study_name: str, storage: str | None, objective, n_workers: int, n_trials_each: int,
                sampler: str = "tpe", pruner: str = "median", seed: int = 0, direction: str = "maximize") -> optuna.Study:
    """Run ``n_workers`` processes that share the study ``study_name`` in ``storage`` (a URL; None:
    ``default_storage(study_name)``), each running ``n_trials_each`` trials of ``objective``; return
    the study, loaded when all are done.

    Each worker opens its own connection to the database, which hands out trial numbers, so the
    trials add up with none lost or numbered twice; each trial's ``user_attrs["worker_pid"]`` says
    which process ran it. Worker i's sampler is seeded ``seed + i``: one seed would have them all
    propose the same configs. The processes are started with "spawn", a fresh Python each, as on
    another machine, so ``objective`` must pickle (a class defined in a module, such as TrainedMLP
    or CurveReplay; not a function defined in a notebook); they start their trials together.

    SQLite lets one process write at a time, and ``make_storage`` makes the others wait for it:
    enough for a few workers whose trials take seconds. Optuna's documentation advises against
    SQLite for parallel optimization; its file-based alternative is
    ``optuna.storages.JournalStorage(JournalFileBackend(path))``, and a server (PostgreSQL) is the
    one for many machines.
    """
    check_choice("sampler", sampler, ("random", "tpe"))   # a grid sampler needs its grid: see make_sampler
    check_choice("pruner", pruner, tuple(PRUNERS))
    check_int("n_workers", n_workers, minimum=1)
    check_int("n_trials_each", n_trials_each, minimum=1)
    if not callable(objective):
        raise TypeError(f"objective: expected a function trial -> score, got {type(objective).__name__}")
    create_study(study_name, storage, sampler, pruner, seed, direction)  # before the workers, who then load it
    context = multiprocessing.get_context("spawn")
    all_ready = context.Barrier(n_workers)
    workers = [context.Process(target=_work, args=(study_name, storage, objective, n_trials_each, sampler, pruner,
                                                   seed + index, direction, optuna.logging.get_verbosity(), all_ready))
               for index in range(n_workers)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    failed = [index for index, worker in enumerate(workers) if worker.exitcode != 0]
    if failed:
        raise RuntimeError(f"run_workers: worker(s) {failed} failed (exit codes "
                           f"{[workers[index].exitcode for index in failed]}); their error is printed above")
    return create_study(study_name, storage, sampler, pruner, seed, direction)


# ---------------------------------------------------------------------------------------------
# Hypergradients: differentiating the validation loss through unrolled SGD
# ---------------------------------------------------------------------------------------------


def _check_rate(name: str, value, allow_zero: bool = False):
    """A rate is a real number or a 0-d float tensor (to differentiate with respect to it), finite, > 0."""
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or not value.is_floating_point():
            raise ValueError(f"{name}: expected a 0-d floating-point tensor, got shape {tuple(value.shape)}, "
                             f"dtype {value.dtype}")
        check_positive(name, value.item(), allow_zero=allow_zero)
    else:
        check_positive(name, value, allow_zero=allow_zero)
    return value


def unrolled_sgd(params: dict, batch_loss, batches, lr, weight_decay=0.0) -> dict:
    """Plain SGD written as a function: one update θ ← θ − lr · (∇ batch_loss(θ, batch) + weight_decay · θ)
    per entry of ``batches``; returns the last θ as a new dict (the names and shapes of ``params``).

    When ``lr``, ``weight_decay`` or a starting parameter is a tensor that requires grad, every
    gradient is taken with ``create_graph=True``, so the result stays a differentiable function of
    them: a loss computed from it can be differentiated back through every update (reverse mode
    through the optimization). The price is that autograd keeps every update's intermediate tensors
    until that backward pass.
    ``batch_loss(params, batch) -> scalar tensor``; ``lr``, ``weight_decay``: numbers or 0-d tensors.
    """
    if not isinstance(params, dict) or not params:
        raise TypeError(f"params: expected a non-empty dict of tensors, got {type(params).__name__}")
    for name, value in params.items():
        check_array(f"params[{name!r}]", value)
    if not callable(batch_loss):
        raise TypeError(f"batch_loss: expected a function (params, batch) -> loss, got {type(batch_loss).__name__}")
    _check_rate("lr", lr)
    _check_rate("weight_decay", weight_decay, allow_zero=True)
    # Record the updates for a backward pass only when something asks for a derivative: without, each
    # update starts from fresh leaves and its graph is freed, which is plain (cheap) training.
    record = any(_requires_grad(value) for value in (lr, weight_decay, *params.values()))
    # each update differentiates the batch loss with respect to every parameter, so each must require grad
    params = {name: value if value.requires_grad else _fresh_leaf(value) for name, value in params.items()}
    for batch in batches:
        grads = torch.autograd.grad(batch_loss(params, batch), list(params.values()), create_graph=record)
        params = {name: value - lr * (grad + weight_decay * value)
                  for (name, value), grad in zip(params.items(), grads)}
        if not record:
            params = {name: _fresh_leaf(value) for name, value in params.items()}
    return params


def _requires_grad(value) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad


def _fresh_leaf(value: torch.Tensor) -> torch.Tensor:
    return value.detach().requires_grad_()


def unrolled_val_loss(model: nn.Module, data: Splits, lr, steps: int, batch_size: int = 128, seed: int = 0,
                      weight_decay=0.0) -> torch.Tensor:
    """The mean cross-entropy on the validation split after ``steps`` updates of plain SGD from
    ``model``'s current weights: a 0-d tensor, differentiable with respect to ``lr`` and
    ``weight_decay`` when they are tensors that require grad (see :func:`unrolled_sgd`).

    The mini-batches of ``batch_size`` come from ``TensorBatches`` with ``seed``, the same for every
    rate, so the loss is a deterministic function of the rate. It is computed in the dtype of the
    model's parameters (float64 for a check against finite differences). ``model`` is not changed;
    it lends its code to ``torch.func.functional_call``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if any(True for _ in model.buffers()):
        # batch norm would update its running statistics in place at every unrolled update
        raise ValueError("model: expected a model without buffers (no batch norm)")
    if not isinstance(data, Splits):
        raise TypeError(f"data: expected a lib.data.Splits, got {type(data).__name__}")
    _check_rate("lr", lr)
    _check_rate("weight_decay", weight_decay, allow_zero=True)
    check_int("steps", steps, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    check_int("seed", seed, minimum=0)
    dtype = next(model.parameters()).dtype
    x_train, y_train = to_tensors(data.x_train, data.y_train, dtype=dtype)
    x_val, y_val = to_tensors(data.x_val, data.y_val, dtype=dtype)
    batches = itertools.islice(TensorBatches(x_train, y_train, batch_size, seed=seed), steps)

    def batch_loss(params: dict, batch: tuple) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    start = {name: value.detach().clone() for name, value in model.named_parameters()}
    trained = unrolled_sgd(start, batch_loss, batches, lr, weight_decay)
    return batch_loss(trained, (x_val, y_val))


def hypergradient(val_loss_of_lr, lr: float) -> tuple[float, float]:
    """The validation loss L(lr) and its derivative dL/dlr, by reverse-mode autograd.

    ``val_loss_of_lr(rate) -> 0-d tensor`` receives the rate as a float64 0-d tensor that requires
    grad, for example ``lambda rate: unrolled_val_loss(model, data, rate, steps=20)``.
    """
    if not callable(val_loss_of_lr):
        raise TypeError(f"val_loss_of_lr: expected a function of the rate, got {type(val_loss_of_lr).__name__}")
    rate = torch.tensor(check_positive("lr", lr), dtype=torch.float64, requires_grad=True)
    val_loss = val_loss_of_lr(rate)
    if not isinstance(val_loss, torch.Tensor) or val_loss.ndim != 0:
        raise ValueError("val_loss_of_lr: expected it to return a 0-d tensor (one loss)")
    (d_lr,) = torch.autograd.grad(val_loss, rate)
    return val_loss.item(), d_lr.item()


def hypergradient_descent(val_loss_of_lr, lr: float, hyper_lr: float, hyper_steps: int, max_factor: float = 2.0):
    """Gradient descent on the hyperparameter u = ln lr: u ← u − hyper_lr · dL/du, with
    dL/du = lr · dL/dlr by the chain rule. On the log scale a step changes the rate by a factor,
    and no step can make it negative. A step is clipped to change the rate by at most
    ``max_factor``: near the rates where training turns chaotic, |dL/dlr| grows by orders of
    magnitude, and one unclipped step would throw the rate to 0 or to infinity.

    Returns three arrays of shape (hyper_steps + 1,): the rates tried, their validation losses
    and their hypergradients dL/dlr (the last rate is evaluated too).
    """
    check_positive("hyper_lr", hyper_lr)
    check_int("hyper_steps", hyper_steps, minimum=1)
    if check_positive("max_factor", max_factor) <= 1:
        raise ValueError(f"max_factor: expected a number > 1, got {max_factor}")
    largest_step = math.log(max_factor)
    rows = [(lr, *hypergradient(val_loss_of_lr, lr))]
    for _ in range(hyper_steps):
        rate, _, d_lr = rows[-1]
        step = float(np.clip(-hyper_lr * rate * d_lr, -largest_step, largest_step))
        rate = rate * math.exp(step)
        rows.append((rate, *hypergradient(val_loss_of_lr, rate)))
    lrs, val_losses, d_lrs = (np.array(column) for column in zip(*rows))
    return lrs, val_losses, d_lrs


def saved_tensor_bytes(compute):
    """Run ``compute()`` and add up the bytes of the distinct tensors that autograd saves for the
    backward pass: the memory reverse mode holds until it runs. Returns (compute's result, bytes)."""
    if not callable(compute):
        raise TypeError(f"compute: expected a function of no arguments, got {type(compute).__name__}")
    storages = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        # holding the storage keeps its address from being reused, so a count by address is exact
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        result = compute()
    return result, sum(storage.nbytes() for storage in storages.values())
