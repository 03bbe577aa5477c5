"""Search at scale with Optuna (lib/search.py, the Optuna section): each dimension suggested on its
own scale; samplers and pruners by name, a seeded TPE reproducible; the SQLite file in the book's
cache; a study resumed from its storage continues its trial count; two worker processes on one
study, their trials running at the same time, add up their trials, none lost or numbered twice;
both again on a real PostgreSQL server; a worker killed mid-trial leaves its trial RUNNING until
heartbeats mark it FAIL and retry its config; a stored study's direction is kept; pruning wired to
lib.train.train's validation checks, never at the last check; the interpolated table of curves;
and every bad argument.

The PostgreSQL server comes from Debian's `postgresql` package (.ci/run installs it). Without the
package these tests are skipped on a reader's machine, but fail in CI (CI=true), where they must run.
"""
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from lib.data import mnist1d_splits
from lib.models import mlp
from lib.search import (
    Categorical, CurveReplay, IntUniform, LogUniform, MLPObjective, SearchResult, SearchSpace, TableObjective,
    TrainedMLP, Trial, Uniform, ValidationPruning, create_study, default_storage, make_pruner, make_sampler,
    make_storage, run_workers, suggest,
)
from lib.train import train

optuna.logging.set_verbosity(optuna.logging.WARNING)


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # tests/conftest.py

SPACE = SearchSpace({"lr": LogUniform(0.01, 1.0), "weight_decay": LogUniform(1e-5, 1e-3)})
BUDGET = 4


def synthetic_grid() -> SearchResult:
    """A 3 x 3 grid over SPACE whose curves rise towards a score that peaks at lr = 0.1, weight decay 1e-4."""
    trials = []
    for lr in np.geomspace(0.01, 1.0, 3):
        for weight_decay in np.geomspace(1e-5, 1e-3, 3):
            final = 0.9 - 0.2 * abs(np.log10(lr) + 1) - 0.05 * abs(np.log10(weight_decay) + 4)
            curve = final * np.arange(1, BUDGET + 1) / BUDGET
            trials.append(Trial(len(trials), {"lr": float(lr), "weight_decay": float(weight_decay)}, BUDGET,
                                float(curve[-1]), curve))
    return SearchResult("grid", trials)


def table_study_objective(seconds_per_epoch: float = 0.0) -> CurveReplay:
    """A picklable Optuna objective that costs nothing: the synthetic table, replayed epoch by epoch
    (at ``seconds_per_epoch``, so that workers' trials take time)."""
    return CurveReplay(TableObjective(synthetic_grid()), SPACE, BUDGET, seconds_per_epoch)


# --------------------------------------------------------------------------------------
# suggest, samplers, pruners
# --------------------------------------------------------------------------------------

def test_suggest_asks_each_dimension_on_its_own_scale():
    space = SearchSpace({"lr": LogUniform(1e-3, 1.0), "p": Uniform(0.0, 0.5), "width": IntUniform(16, 128),
                         "optimizer": Categorical(["sgd", "adam"])})
    study = optuna.create_study(sampler=make_sampler("random", seed=0))
    trial = study.ask()
    config = suggest(trial, space)
    assert list(config) == space.names
    distributions = trial.distributions
    assert distributions["lr"] == optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)
    assert distributions["p"] == optuna.distributions.FloatDistribution(0.0, 0.5)
    assert distributions["width"] == optuna.distributions.IntDistribution(16, 128)
    assert distributions["optimizer"] == optuna.distributions.CategoricalDistribution(["sgd", "adam"])
    assert 1e-3 <= config["lr"] <= 1.0 and 0 <= config["p"] <= 0.5 and 16 <= config["width"] <= 128


def quadratic_in_log_lr(trial: optuna.Trial) -> float:
    return -(np.log10(suggest(trial, SPACE)["lr"]) + 1) ** 2


def tpe_params(seed: int) -> list:
    study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", seed=seed, n_startup_trials=3))
    study.optimize(quadratic_in_log_lr, n_trials=12)
    return [trial.params for trial in study.trials]


def test_tpe_with_a_seed_is_reproducible():
    assert tpe_params(seed=3) == tpe_params(seed=3)
    assert tpe_params(seed=3) != tpe_params(seed=4)


def test_grid_sampler_runs_every_combination_once():
    grid = {"lr": [0.01, 0.1], "weight_decay": [1e-5, 1e-3]}
    study = optuna.create_study(direction="maximize", sampler=make_sampler("grid", search_space=grid))
    study.optimize(quadratic_in_log_lr, n_trials=4)
    seen = sorted((trial.params["lr"], trial.params["weight_decay"]) for trial in study.trials)
    assert seen == [(0.01, 1e-5), (0.01, 1e-3), (0.1, 1e-5), (0.1, 1e-3)]


def test_samplers_and_pruners_by_name():
    assert isinstance(make_sampler("random"), optuna.samplers.RandomSampler)
    assert isinstance(make_sampler("tpe"), optuna.samplers.TPESampler)
    assert isinstance(make_pruner("median"), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("halving"), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_pruner("none"), optuna.pruners.NopPruner)


def test_a_pruned_trial_is_marked_pruned_and_its_epochs_counted():
    study = optuna.create_study(direction="maximize", sampler=make_sampler("random", seed=0),
                                pruner=make_pruner("median", n_startup_trials=3))
    study.optimize(table_study_objective(), n_trials=20)
    states = [trial.state for trial in study.trials]
    pruned = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.PRUNED]
    assert states[:3] == [optuna.trial.TrialState.COMPLETE] * 3 and pruned
    for trial in pruned:
        epochs = trial.user_attrs["epochs"]
        assert 1 <= epochs < BUDGET and max(trial.intermediate_values) == epochs
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert trial.user_attrs["epochs"] == BUDGET and trial.value == trial.intermediate_values[BUDGET]


# --------------------------------------------------------------------------------------
# The pruning hook on lib.train.train's validation checks
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_data():
    return mnist1d_splits(train_size=256)


def test_validation_pruning_reports_each_check_of_train(small_data):
    study = optuna.create_study(direction="maximize", pruner=make_pruner("none"))
    trial = study.ask()
    model = mlp([40, 16, 10])
    history = train(model, small_data, torch.optim.SGD(model.parameters(), lr=0.1), epochs=3,
                    batch_size=64, eval_every=4, progress=False, record=ValidationPruning(trial, small_data))
    study.tell(trial, history.val_acc[-1])
    reported = study.trials[0].intermediate_values
    assert list(reported) == [1, 2, 3] and list(reported.values()) == history.val_acc[1:]   # check 0 not reported


def test_trained_mlp_is_stopped_by_its_pruner_and_otherwise_equals_mlp_objective(small_data):
    objective = MLPObjective(small_data, width=16, batch_size=64)
    stopped = optuna.create_study(direction="maximize", sampler=make_sampler("random", seed=0),
                                  pruner=optuna.pruners.ThresholdPruner(lower=0.99))  # prunes any accuracy < 0.99
    stopped.optimize(TrainedMLP(objective, SPACE, budget=3), n_trials=1)
    assert stopped.trials[0].state == optuna.trial.TrialState.PRUNED
    assert list(stopped.trials[0].intermediate_values) == [1]   # stopped at its first check

    # a pruner that would judge only at the last check: the run is paid for by then, so it counts
    at_the_end = optuna.create_study(direction="maximize", sampler=make_sampler("random", seed=0),
                                     pruner=optuna.pruners.ThresholdPruner(lower=0.99, n_warmup_steps=3))
    at_the_end.optimize(TrainedMLP(objective, SPACE, budget=3), n_trials=1)
    assert at_the_end.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert list(at_the_end.trials[0].intermediate_values) == [1, 2, 3]

    complete = optuna.create_study(direction="maximize", sampler=make_sampler("random", seed=0),
                                   pruner=make_pruner("none"))
    complete.optimize(TrainedMLP(objective, SPACE, budget=3), n_trials=1)
    trial = complete.trials[0]
    curve = objective(trial.params, 3).curve   # the same run, trained batched by train_seeds
    # equal up to rounding: at most 2 of the 400 validation examples change sides
    np.testing.assert_allclose(list(trial.intermediate_values.values()), curve, atol=0.0051)
    assert trial.value == trial.intermediate_values[3]


# --------------------------------------------------------------------------------------
# The table of curves
# --------------------------------------------------------------------------------------

def test_table_objective_gives_the_grid_curves_and_interpolates_in_log_space():
    grid = synthetic_grid()
    table = TableObjective(grid)
    for trial in grid.trials:
        np.testing.assert_allclose(table(trial.config, BUDGET).curve, trial.curve)
    corner = {"lr": 0.01, "weight_decay": 1e-5}
    between = {"lr": float(np.sqrt(0.01 * 0.1)), "weight_decay": 1e-5}   # halfway in log(lr)
    expected = (table(corner, BUDGET).score + table({"lr": 0.1, "weight_decay": 1e-5}, BUDGET).score) / 2
    assert table(between, BUDGET).score == pytest.approx(expected)
    assert len(table(corner, 2).curve) == 2


# --------------------------------------------------------------------------------------
# Storage: the default file, resuming, workers; SQLite and PostgreSQL
# --------------------------------------------------------------------------------------

def test_default_storage_is_a_file_in_the_book_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBOOK_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="^study_name:"):
        default_storage("../escape")
    assert not (tmp_path / "studies").exists()   # a bad name creates nothing
    assert default_storage("lr-search") == f"sqlite:///{tmp_path}/studies/lr-search.db"
    assert (tmp_path / "studies").is_dir()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def require(what: str, install: str):
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI: .ci/run installs it with apt-get")
    pytest.skip(f"{what} is not installed ({install})")


@pytest.fixture(scope="module")
def postgresql_url():
    """A throwaway PostgreSQL server on 127.0.0.1 (a free port), with an empty database; stopped and
    deleted after the module's tests. As root, the server runs as the `postgres` user (it refuses root)."""
    initdbs = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    if not initdbs:
        require("PostgreSQL (Debian's postgresql package)", "apt-get install postgresql")
    if importlib.util.find_spec("psycopg") is None:
        require("psycopg (the driver Optuna's storage talks to PostgreSQL with)", "pip install 'psycopg[binary]'")
    bin_dir = initdbs[-1].parent
    as_server_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    directory = Path(tempfile.mkdtemp(prefix="optuna-postgresql-"))
    if as_server_user:
        shutil.chown(directory, "postgres")
    data, port = directory / "data", free_port()

    def run(program: str, *args: str):
        subprocess.run([*as_server_user, str(bin_dir / program), *args], check=True, capture_output=True)

    run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres")
    run("pg_ctl", "-D", str(data), "-o", f"-k {directory} -h 127.0.0.1 -p {port}", "-l", str(directory / "log"),
        "-w", "start")
    try:
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "studies")
        yield f"postgresql://postgres@127.0.0.1:{port}/studies"
    finally:
        run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")   # a throwaway: no checkpoint
        shutil.rmtree(directory)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/studies.db"
    return request.getfixturevalue("postgresql_url")


def test_a_study_resumed_from_its_storage_continues_its_trial_count(storage_url):
    study = create_study("resumed", storage_url, sampler="tpe", pruner="none", seed=0)
    study.optimize(table_study_objective(), n_trials=3)
    del study   # as if the process had stopped
    study = create_study("resumed", storage_url, sampler="tpe", pruner="none", seed=1)
    assert len(study.trials) == 3
    study.optimize(table_study_objective(), n_trials=2)
    assert [trial.number for trial in study.trials] == [0, 1, 2, 3, 4]
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials)


def test_two_worker_processes_share_one_study(storage_url):
    study = run_workers("shared", storage_url, table_study_objective(seconds_per_epoch=0.05), n_workers=2,
                        n_trials_each=4, sampler="random", pruner="none")
    numbers = sorted(trial.number for trial in study.trials)
    assert numbers == list(range(8))   # none lost, none numbered twice
    pids = [trial.user_attrs["worker_pid"] for trial in study.trials]
    assert len(set(pids)) == 2 and os.getpid() not in pids and all(pids.count(pid) == 4 for pid in set(pids))
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials)
    # the workers really ran at the same time: some trial of one overlaps in time a trial of the other
    assert any(one.datetime_start < other.datetime_complete and other.datetime_start < one.datetime_complete
               for one in study.trials for other in study.trials
               if one.user_attrs["worker_pid"] != other.user_attrs["worker_pid"])


def test_run_workers_keeps_the_direction_and_create_study_refuses_another(tmp_path):
    url = f"sqlite:///{tmp_path}/direction.db"
    study = run_workers("loss", url, table_study_objective(), n_workers=1, n_trials_each=1, sampler="random",
                        pruner="none", direction="minimize")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE and len(study.trials) == 1
    with pytest.raises(ValueError, match="^direction: the stored study 'loss' was created to minimize"):
        create_study("loss", url)   # maximize, the default


# A worker that dies in the middle of a trial, as under kill -9: no exception, no cleanup. It needs
# only Optuna (not torch), so it starts fast; heartbeats on, as create_study(heartbeat_interval=1) sets.
KILLED_WORKER = textwrap.dedent("""
    import os, sys, time, warnings
    import optuna
    warnings.simplefilter("ignore")
    storage = optuna.storages.RDBStorage(sys.argv[1], heartbeat_interval=1)
    study = optuna.load_study(study_name="crash", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    def dies_mid_trial(trial):
        trial.suggest_float("lr", 0.01, 1.0, log=True)
        time.sleep(2)   # let the heartbeat thread record its first beat: a trial with none is never found stale
        os._exit(1)
    study.optimize(dies_mid_trial)
""")


def test_a_killed_worker_leaves_its_trial_running_until_a_heartbeat_fails_and_retries_it(tmp_path):
    url = f"sqlite:///{tmp_path}/crash.db"
    create_study("crash", url, sampler="random", pruner="none", heartbeat_interval=1)
    assert subprocess.run([sys.executable, "-c", KILLED_WORKER, url]).returncode == 1
    without_heartbeat = create_study("crash", url, sampler="random", pruner="none")
    without_heartbeat.optimize(lambda trial: trial.suggest_float("lr", 0.01, 1.0, log=True), n_trials=1)
    assert [trial.state.name for trial in without_heartbeat.trials] == ["RUNNING", "COMPLETE"]   # stuck for good
    time.sleep(3.5)   # the last heartbeat, older than two intervals by SQLite's clock (whole seconds)
    study = create_study("crash", url, sampler="random", pruner="none", heartbeat_interval=1)
    study.optimize(lambda trial: trial.suggest_float("lr", 0.01, 1.0, log=True), n_trials=1)
    killed, _, retry = study.trials
    assert killed.state.name == "FAIL" and retry.state.name == "COMPLETE"
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == killed.number
    assert retry.params == killed.params   # the same config, run again


# --------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------

def test_bad_inputs_name_their_argument(tmp_path):
    with pytest.raises(ValueError, match="^sampler: expected one of 'random', 'tpe', 'grid'"):
        make_sampler("bayes")
    with pytest.raises(ValueError, match="^pruner:"):
        make_pruner("hyperband")
    with pytest.raises(ValueError, match="^seed:"):
        make_sampler("tpe", seed=-1)
    with pytest.raises(ValueError, match="^storage: expected a URL starting with sqlite:///") as error:
        make_storage("mysql://user:secret@host/db")
    assert "secret" not in str(error.value)   # a URL's password never reaches the message
    with pytest.raises(TypeError, match="^storage:"):
        make_storage(tmp_path / "study.db")
    with pytest.raises(ValueError, match="^direction:"):
        create_study("bad", f"sqlite:///{tmp_path}/bad.db", direction="up")
    with pytest.raises(ValueError, match="^heartbeat_interval:"):
        make_storage(f"sqlite:///{tmp_path}/bad.db", heartbeat_interval=0)
    with pytest.raises(ValueError, match="^seconds_per_epoch:"):
        CurveReplay(TableObjective(synthetic_grid()), SPACE, BUDGET, seconds_per_epoch=-1.0)
    with pytest.raises(ValueError, match="^last_check:"):
        ValidationPruning(optuna.create_study().ask(), mnist1d_splits(train_size=256), last_check=0)
    with pytest.raises(TypeError, match="^space:"):
        suggest(optuna.create_study().ask(), {"lr": LogUniform(0.1, 1.0)})
    with pytest.raises(TypeError, match="^objective:"):
        CurveReplay("not callable", SPACE, BUDGET)
    with pytest.raises(TypeError, match="^objective:"):
        TrainedMLP(table_study_objective(), SPACE, BUDGET)
    with pytest.raises(TypeError, match="^data:"):
        ValidationPruning(optuna.create_study().ask(), data=np.zeros(3))
    with pytest.raises(ValueError, match="^sampler:"):
        run_workers("w", f"sqlite:///{tmp_path}/w.db", table_study_objective(), 2, 1, sampler="grid")
    with pytest.raises(ValueError, match="^n_workers:"):
        run_workers("w", f"sqlite:///{tmp_path}/w.db", table_study_objective(), 0, 1)


def test_table_objective_bad_inputs():
    table = TableObjective(synthetic_grid())
    with pytest.raises(ValueError, match="^budget: expected at most 4"):
        table({"lr": 0.1, "weight_decay": 1e-4}, BUDGET + 1)
    with pytest.raises(ValueError, match="^config:"):
        table({"lr": 0.1}, BUDGET)
    with pytest.raises(ValueError, match="out of bounds"):
        table({"lr": 3.0, "weight_decay": 1e-4}, BUDGET)
    with pytest.raises(ValueError, match="^grid: expected every combination"):
        TableObjective(SearchResult("grid", synthetic_grid().trials[:-1]))
    with pytest.raises(TypeError, match="^grid:"):
        TableObjective([1, 2])
