"""Hyperparameter search: search spaces, grid and random search, successive halving and Hyperband,
Optuna studies (SQLite on one machine, PostgreSQL across machines), learning-curve diagnosis, and
hypergradients through unrolled SGD.

The hand-written searches teach how each method spends its budget; Optuna runs them for real.
Every search calls one objective interface: ``objective(config, budget) -> TrialResult``, a config
(a dict of hyperparameter values) and a budget (epochs) in, a score (higher is better) and the
learning curve (the score after each epoch) out.
"""
from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Search spaces, the objective interface, grid and random search
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Successive halving and Hyperband
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Learning-curve diagnosis
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Search at scale: Optuna
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Hypergradients: differentiating the validation loss through unrolled SGD
# ---------------------------------------------------------------------------------------------
