"""A small torch training loop: step-based, with evaluation, progress bar and history.

Every chapter trains through ``train``, so train/eval mode, device placement and
bookkeeping are written once. Experiments stay comparable: two runs with the same seed
see the same mini-batches in the same order. ``train_seeds`` trains k seeds of one
experiment at once, as one batched model, and ``mean_spread`` / ``format_mean_spread`` /
``metric_over_seeds`` / ``final_over_seeds`` report a result as mean ± spread over those
seeds; ``compare_over_seeds`` applies the book's rule for calling one result better.
``SeedwiseSGD`` gives each seed of one batched run its own learning rate and weight decay.

A learning-rate schedule is any function ``t -> rate`` of the update number t (or of the
epoch); ``train`` and ``train_seeds`` set it before every update and log each update's
mini-batch loss and rate (``History.step_loss`` / ``step_lr``). ``EarlyStopping`` stops a
``train`` run when a metric stops improving and gives back the weights of its best record,
kept in memory or written to disk with ``save_checkpoint``, which never leaves a half-written file.
"""
from __future__ import annotations

import math
import numbers
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from lib.checks import check_array, check_choice, check_int, check_positive
from lib.data import Splits, TensorBatches, to_tensors
from lib.device import set_seed

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")
SCHEDULE_PER = ("step", "epoch")


@dataclass
class History:
    """What a run recorded. ``steps[i]`` is the step at which entry i of every list was taken.

    ``train_loss`` / ``train_acc`` average the mini-batches since the previous record;
    ``val_loss`` / ``val_acc`` are measured on the whole validation split in eval mode.
    ``extra`` holds what a ``record`` callback returned, one list per key, and ``lr`` the
    learning rate of the last update before each record (at step 0: of the first update).

    ``step_loss`` and ``step_lr`` hold one entry per update (``step_loss[t]``: the mini-batch
    loss of update t, taken at loop step t + 1, before the update), so that spikes between
    two records stay visible; ``step_extra`` holds what an ``on_step`` callback returned,
    one list per key.

    With early stopping, ``best_step`` is the record whose weights the model was given back,
    and ``stopped_step`` the record at which the run stopped (None if it ran to the end).
    """

    steps: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    diverged: bool = False
    lr: list = field(default_factory=list)
    step_loss: list = field(default_factory=list)
    step_lr: list = field(default_factory=list)
    step_extra: dict = field(default_factory=dict)
    best_step: int | None = None
    stopped_step: int | None = None

    def final(self, metric: str = "val_acc") -> float:
        return getattr(self, metric)[-1]

    def first_step_reaching(self, metric: str, threshold: float):
        """The first recorded step at which ``metric`` is at least ``threshold``, or None."""
        for step, value in zip(self.steps, getattr(self, metric)):
            if value >= threshold:
                return step
        return None


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000):
    """Mean cross-entropy loss and accuracy of ``model`` on ``(x, y)``, in eval mode.

    The model's previous mode (train or eval) is restored afterwards.
    """
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        total_loss += nn.functional.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(dim=1) == target).sum().item()
    model.train(was_training)
    return total_loss / len(x), correct / len(x)


def _check_length(steps, epochs, batch_size: int, eval_every: int, n_train: int) -> int:
    """Check the length and rhythm of a run; return its number of steps (``epochs`` converted)."""
    if (steps is None) == (epochs is None):
        raise ValueError("steps, epochs: give exactly one of them")
    check_int("batch_size", batch_size, minimum=1)
    check_int("eval_every", eval_every, minimum=1)
    if epochs is not None:
        steps = check_int("epochs", epochs, minimum=1) * (n_train // batch_size)
    return check_int("steps", steps, minimum=1)


def _rate_at(schedule, t: int) -> float:
    """``schedule(t)``, checked to be a learning rate: a finite number >= 0."""
    return check_positive(f"schedule({t})", schedule(t), allow_zero=True)


def _rate_of_update(schedule, schedule_per: str, steps_per_epoch: int):
    """Check the schedule arguments; return the function t -> rate of update t (t = 0, 1, ...), or None."""
    check_choice("schedule_per", schedule_per, SCHEDULE_PER)
    if schedule is None:
        return None
    if not callable(schedule):
        raise TypeError(f"schedule: expected None or a function step -> learning rate, got {type(schedule).__name__}")
    _rate_at(schedule, 0)  # a schedule that gives no rate fails here, before any training
    if schedule_per == "epoch":
        return lambda t: _rate_at(schedule, t // steps_per_epoch)
    return lambda t: _rate_at(schedule, t)


def _apply_schedule(optimizer: torch.optim.Optimizer, rate_of_update, t: int) -> None:
    """Set every parameter group's rate for update t; without a schedule, leave the optimizer's own."""
    if rate_of_update is not None:
        rate = rate_of_update(t)
        for group in optimizer.param_groups:
            group["lr"] = rate


def _rates_now(optimizer: torch.optim.Optimizer, k: int) -> list:
    """The rate each of k seeds would be updated with now: SeedwiseSGD's own per seed, otherwise the
    first parameter group's (NaN for an optimizer that keeps no "lr" there)."""
    if isinstance(optimizer, SeedwiseSGD):
        return optimizer.lrs.tolist()
    return [float(optimizer.param_groups[0].get("lr", math.nan))] * k


def _append_step_extra(history: History, values) -> None:
    """What ``on_step`` returned (a dict or None) onto ``history.step_extra``, one list per key."""
    if values is None:
        return
    if not isinstance(values, dict):
        raise TypeError(f"on_step: expected it to return a dict or None, got {type(values).__name__}")
    for key, value in values.items():
        history.step_extra.setdefault(key, []).append(value)


def _splits_on(data: Splits, model: nn.Module, device):
    """Training and validation tensors ``(x, y)`` on ``device``, features in the model's dtype."""
    dtype = next(model.parameters()).dtype
    return to_tensors(data.x_train, data.y_train, device, dtype), to_tensors(data.x_val, data.y_val, device, dtype)


def _take_record(history: History, model: nn.Module, step: int, rate: float, running: tuple, train_split, val_split,
                 record):
    """Append one entry to every list of ``history``; ``rate`` is the learning rate of the last update.

    ``running = (loss_sum, correct, count)`` sums the mini-batches since the previous record;
    at step 0 (``count == 0``) no batch has been seen, so the whole training split is evaluated.
    ``record(model)`` runs in eval mode without gradients, so it never updates batch-norm
    running statistics. The model is left in training mode.
    """
    loss_sum, correct, count = running
    history.steps.append(step)
    history.lr.append(rate)
    if count:
        history.train_loss.append(loss_sum / count)
        history.train_acc.append(correct / count)
    else:
        loss, acc = evaluate(model, *train_split)
        history.train_loss.append(loss)
        history.train_acc.append(acc)
    val_loss, val_acc = evaluate(model, *val_split)
    history.val_loss.append(val_loss)
    history.val_acc.append(val_acc)
    if record is not None:
        model.eval()
        with torch.no_grad():
            for key, value in record(model).items():
                history.extra.setdefault(key, []).append(value)
    model.train()


def train(
    model: nn.Module,
    data: Splits,
    optimizer: torch.optim.Optimizer,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 64,
    eval_every: int = 100,
    device=None,
    seed: int = 0,
    record=None,
    progress: bool = True,
    description: str = "training",
    augment=None,
    schedule=None,
    schedule_per: str = "step",
    on_step=None,
    early_stopping: EarlyStopping | None = None,
) -> History:
    """Train ``model`` with cross-entropy on ``data`` for ``steps`` mini-batch steps (or ``epochs``).

    Every ``eval_every`` steps (and at step 0, before any update) the validation loss and
    accuracy are measured in eval mode, and ``record(model)`` is called if given (in eval
    mode, without gradients); it returns
    a dict of numbers or arrays that is appended to ``history.extra``. Training stops early,
    with ``history.diverged = True``, if the loss becomes NaN or infinite.
    Features are converted to the dtype of the model's parameters (float32 unless the model
    was made ``.double()``). ``seed`` fixes the order of the mini-batches.

    ``augment(x, y, rng) -> (x, target)``, if given, transforms each training mini-batch (never
    the evaluation data) with ``rng = augment_rng(seed)``; ``target`` is the labels ``(B,)`` or
    class probabilities ``(B, C)`` (mixup), and the training accuracy counts the batch's
    original labels.

    ``schedule``, if given, is a function ``t -> learning rate``: before update t (t = 0, 1, ...;
    the update of loop step t + 1) every parameter group's rate is set to ``schedule(t)``, or
    with ``schedule_per="epoch"`` to ``schedule(t // steps_per_epoch)`` (``steps_per_epoch =
    len(data.y_train) // batch_size``). Any function will do; a torch ``LRScheduler`` needs no
    wrapper, pass its rule as a function instead. ``history.lr``, ``step_lr`` and
    ``step_loss`` log the rates and mini-batch losses.

    ``on_step(step, loss, model) -> dict | None``, if given, is called at every loop step
    (1-based) after ``backward()`` and before ``optimizer.step()``, so the gradients of this
    step are in ``p.grad``; ``loss`` is the mini-batch loss as a float. What it returns is
    appended to ``history.step_extra``, one entry per step. It only logs: it cannot skip or
    change the update, and it should not run the model (in training mode, a forward pass would
    update batch-norm statistics).

    ``early_stopping``, an ``EarlyStopping``, gets every record (step 0 included) and may end
    the run there (``history.stopped_step``); at the end, stopped or not (diverged too), the
    model gets back the weights of its best record (``history.best_step``), so that
    ``evaluate`` on the validation split gives exactly the ``val_loss`` recorded at that step.
    """
    steps = _check_length(steps, epochs, batch_size, eval_every, len(data.y_train))
    _check_augment(augment)
    rate_of_update = _rate_of_update(schedule, schedule_per, len(data.y_train) // batch_size)
    if on_step is not None and not callable(on_step):
        raise TypeError(f"on_step: expected None or a function (step, loss, model) -> dict, "
                        f"got {type(on_step).__name__}")
    _check_early_stopping(early_stopping)
    rng = augment_rng(seed)
    device = device or next(model.parameters()).device
    model.to(device)
    train_split, val_split = _splits_on(data, model, device)
    batches = iter(TensorBatches(*train_split, batch_size, seed=seed))

    history = History()
    running_loss, running_correct, running_count = 0.0, 0, 0
    model.train()
    _apply_schedule(optimizer, rate_of_update, 0)  # so that step 0 records the rate of the first update
    _take_record(history, model, 0, _rates_now(optimizer, 1)[0], (0.0, 0, 0), train_split, val_split, record)
    _stops_early(early_stopping, history, model)  # never stops here: the first check is always the best so far
    bar = tqdm(range(1, steps + 1), desc=description, disable=not progress, mininterval=0.5)
    for step in bar:
        _apply_schedule(optimizer, rate_of_update, step - 1)
        x, y = next(batches)
        x, target = augment(x, y, rng) if augment is not None else (x, y)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, target)
        if not torch.isfinite(loss):
            history.diverged = True
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loss_value = loss.item()
        if on_step is not None:
            _append_step_extra(history, on_step(step, loss_value, model))
        optimizer.step()
        history.step_loss.append(loss_value)
        history.step_lr.append(_rates_now(optimizer, 1)[0])
        running_loss += loss_value * len(y)
        running_correct += (logits.argmax(dim=1) == y).sum().item()
        running_count += len(y)
        if step % eval_every == 0 or step == steps:
            running = (running_loss, running_correct, running_count)
            _take_record(history, model, step, history.step_lr[-1], running, train_split, val_split, record)
            bar.set_postfix(val_acc=f"{history.val_acc[-1]:.3f}")
            running_loss, running_correct, running_count = 0.0, 0, 0
            if _stops_early(early_stopping, history, model):
                break
    bar.close()
    if early_stopping is not None:
        early_stopping.restore(model)
        history.best_step = early_stopping.best_step
    model.train()
    return history


def _check_early_stopping(early_stopping) -> None:
    if early_stopping is None:
        return
    if not isinstance(early_stopping, EarlyStopping):
        raise TypeError(f"early_stopping: expected None or an EarlyStopping, got {type(early_stopping).__name__}")
    if early_stopping.best_step is not None:
        raise ValueError("early_stopping: expected a new EarlyStopping, got one that has already seen a run")


def _stops_early(early_stopping, history: History, model: nn.Module) -> bool:
    """Hand the latest record to ``early_stopping``; True when it says stop (then noted in ``history``)."""
    if early_stopping is None:
        return False
    step = history.steps[-1]
    if not early_stopping.update(step, getattr(history, early_stopping.metric)[-1], model):
        return False
    history.stopped_step = step
    return True


# ---------------------------------------------------------------------------------------
# Early stopping and checkpoints
# ---------------------------------------------------------------------------------------

def _check_path(name: str, path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a file path (str or pathlib.Path), got {type(path).__name__}")
    return Path(path)


def save_checkpoint(state: dict, path) -> None:
    """Write ``state`` (a ``state_dict()``) to ``path`` atomically: ``path`` holds the old file or the new one, whole.

    Why not ``torch.save(state, path)``: it writes the file piece by piece, so a crash or a
    Ctrl-C halfway through would leave a truncated file where the best checkpoint was, and
    the best weights would be lost. Instead the state goes into a temporary file in the same
    directory, is forced onto the disk (``os.fsync``), and only then does ``os.replace``
    rename it onto ``path``: POSIX makes that rename atomic (same directory, so same file
    system; on Windows it is a single system call too, though not documented as atomic).
    Finally the directory itself is synced where the system allows it, so that the rename
    also survives a power cut. On any failure the temporary file is removed.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state: expected a dict of tensors (a state_dict), got {type(state).__name__}")
    path = _check_path("path", path)
    temporary = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with temporary:  # closed before the rename, which Windows needs
            torch.save(state, temporary)
            temporary.flush()
            os.fsync(temporary.fileno())
        os.replace(temporary.name, path)
    except BaseException:  # KeyboardInterrupt included: an interrupted write is what this guards against
        Path(temporary.name).unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Flush a directory's entries (the rename) to disk; POSIX only: Windows cannot open a directory."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_checkpoint(path, map_location=None) -> dict:
    """The state that ``save_checkpoint`` wrote to ``path``, on the devices it was saved from (or ``map_location``).

    ``weights_only=True``: only tensors and plain containers are unpickled, so a file from
    elsewhere cannot run code while it loads.
    """
    return torch.load(_check_path("path", path), map_location=map_location, weights_only=True)


class EarlyStopping:
    """Stop when ``metric`` has not improved for ``patience`` checks in a row; keep the best weights.

    ``train(..., early_stopping=EarlyStopping(patience=5))`` calls ``update`` at every record,
    step 0 included, and ``restore`` at the end. A check improves when its value beats the
    best so far by more than ``min_delta`` (below it for ``mode="min"``, above for ``"max"``;
    None picks "min" for a loss, "max" for an accuracy). The first check is always the best
    so far, so a run that never improves gets its initial weights back; a NaN never improves.

    At each improvement the model's ``state_dict()`` (parameters and buffers, batch-norm
    running statistics included) is copied: in memory, or with ``checkpoint_path`` to that
    file through ``save_checkpoint``, so that it survives a crash of the run. ``best_step`` and
    ``best_value`` describe the best check, ``stopped_step`` the check that stopped the run
    (None while it has not). One EarlyStopping serves one run.
    """

    def __init__(self, patience: int, metric: str = "val_loss", mode: str | None = None, min_delta: float = 0.0,
                 checkpoint_path=None):
        self.patience = check_int("patience", patience, minimum=1)
        self.metric = check_choice("metric", metric, METRICS)
        default_mode = "min" if metric.endswith("loss") else "max"
        self.mode = check_choice("mode", default_mode if mode is None else mode, ("min", "max"))
        self.min_delta = check_positive("min_delta", min_delta, allow_zero=True)
        self.checkpoint_path = None if checkpoint_path is None else _check_path("checkpoint_path", checkpoint_path)
        self.best_step = self.best_value = self.stopped_step = None
        self.checks_without_improvement = 0
        self._best_state = None  # the in-memory copy, when there is no checkpoint_path

    def _improves(self, value: float) -> bool:
        if self.best_step is None:
            return True
        if self.mode == "min":
            return value < self.best_value - self.min_delta
        return value > self.best_value + self.min_delta   # False for NaN, as above

    def update(self, step: int, value: float, model: nn.Module) -> bool:
        """One check: ``value`` of the metric at ``step``, for ``model``. True when the run should stop now."""
        check_int("step", step, minimum=0)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"value: expected a real number, got {type(value).__name__}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        if self._improves(value):
            self.best_step, self.best_value = step, float(value)
            self.checks_without_improvement = 0
            self._save(model)
        else:
            self.checks_without_improvement += 1
        if self.checks_without_improvement < self.patience:
            return False
        self.stopped_step = step
        return True

    def _save(self, model: nn.Module) -> None:
        state = model.state_dict()
        if self.checkpoint_path is None:
            # detach().clone(): state_dict() shares memory with the model, which training goes on changing
            self._best_state = {name: tensor.detach().clone() for name, tensor in state.items()}
        else:
            save_checkpoint(state, self.checkpoint_path)

    def restore(self, model: nn.Module) -> nn.Module:
        """Load the best check's weights and buffers into ``model`` (exact copies); return it."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        if self.best_step is None:
            raise RuntimeError("EarlyStopping.restore: no check taken yet, so there are no best weights")
        state = self._best_state if self.checkpoint_path is None else load_checkpoint(self.checkpoint_path)
        model.load_state_dict(state)
        return model


def augment_rng(seed: int) -> np.random.Generator:
    """The generator that draws a run's augmentations: its own stream, derived from the run's ``seed``."""
    return np.random.default_rng([seed, 1])  # [seed, 1]: not the stream np.random.default_rng(seed) gives


def _check_augment(augment) -> None:
    if augment is not None and not callable(augment):
        raise TypeError(f"augment: expected None or a function (x, y, rng) -> (x, target), got {type(augment).__name__}")


def _augments_per_seed(augment, seeds: list) -> list:
    """``augment`` for train_seeds as one entry (a function or None) per seed."""
    if not isinstance(augment, (list, tuple)):
        _check_augment(augment)
        return [augment] * len(seeds)
    if len(augment) != len(seeds):
        raise ValueError(f"augment: expected one entry per seed ({len(seeds)}), got {len(augment)}")
    for entry in augment:
        _check_augment(entry)
    return list(augment)


def _augment_each_seed(augments: list, x: torch.Tensor, y: torch.Tensor, rngs: list):
    """Seed i's batch ``x[i], y[i]`` through its own ``augments[i]`` (None: unchanged) with its own
    generator, restacked. One call per seed, so that batch-level steps (mixup's pairing) never mix
    two seeds' data. If any seed's targets are probabilities (B, C), the others' labels become one-hot."""
    pairs = [(x[i], y[i]) if augment is None else augment(x[i], y[i], rng)
             for i, (augment, rng) in enumerate(zip(augments, rngs))]
    targets = [target for _, target in pairs]
    if any(target.ndim == 2 for target in targets):
        classes = next(target.shape[1] for target in targets if target.ndim == 2)
        targets = [target if target.ndim == 2 else F.one_hot(target, classes).to(x.dtype) for target in targets]
    return torch.stack([images for images, _ in pairs]), torch.stack(targets)


def _check_seeds(seeds) -> list:
    """``seeds`` as a list of distinct integers >= 0."""
    if not isinstance(seeds, (list, tuple, range)):
        raise TypeError(f"seeds: expected a list of integers, got {type(seeds).__name__}")
    if len(seeds) == 0:
        raise ValueError("seeds: expected at least one seed, got none")
    seeds = [check_int(f"seeds[{index}]", seed, minimum=0) for index, seed in enumerate(seeds)]
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise ValueError(f"seeds: expected distinct seeds, got {repeated} more than once")
    return seeds


def _build_models(build_model, seeds: list) -> list:
    """One model per seed: ``set_seed(seed)``, then ``build_model()``. All must have the same parameters."""
    if isinstance(build_model, nn.Module) or not callable(build_model):  # a model is callable, but not a builder
        raise TypeError(f"build_model: expected a function that returns a new model, got {type(build_model).__name__}")
    models = []
    for seed in seeds:
        set_seed(seed)
        model = build_model()
        if not isinstance(model, nn.Module):
            raise TypeError(f"build_model: expected it to return an nn.Module, got {type(model).__name__}")
        if any(model is other for other in models):
            raise ValueError("build_model: returned the same model twice; it must build a new one on every call")
        models.append(model)
    shapes = [[(name, p.shape) for name, p in model.named_parameters()] for model in models]
    if any(shape != shapes[0] for shape in shapes):
        raise ValueError("build_model: expected models with the same parameter names and shapes for every seed")
    return models


class StackedModels:
    """k models of one architecture, held as stacked tensors and run as one with ``torch.vmap``.

    ``params`` and ``buffers`` map each name to a ``(k, ...)`` tensor whose entry i is model
    i's. The parameters are new leaf tensors, to hand to an optimizer; the k ``models`` are
    not touched until ``copy_to_model`` writes entry i back into model i.
    """

    def __init__(self, models: list):
        self.models = models
        self.params, self.buffers = torch.func.stack_module_state(models)
        # vmap runs one_model on entry i of every argument, for all i at once. Buffers are
        # batched too, so batch norm updates each model's own running statistics in place.
        # randomness="different": each model draws its own dropout masks.
        self._all_models = torch.vmap(self._one_model, randomness="different")

    def _one_model(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        # models[0] only lends its code: functional_call swaps the given tensors in for the
        # call and puts its own back afterwards.
        return torch.func.functional_call(self.models[0], (params, buffers), (x,))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: x (k, B, D), model i on its own batch x[i] → (k, B, C)."""
        with warnings.catch_warnings():
            # lib's BatchNorm updates its running statistics with lerp_, which vmap has no
            # batching rule for: it falls back to a loop over the k models (correct, slower).
            warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet")
            return self._all_models(self.params, self.buffers, x)

    @torch.no_grad()
    def copy_to_model(self, index: int) -> nn.Module:
        """Write entry ``index`` of every stacked parameter and buffer into model ``index``; return it."""
        model = self.models[index]
        for name, tensor in model.named_parameters():
            tensor.copy_(self.params[name][index])
        for name, tensor in model.named_buffers():
            tensor.copy_(self.buffers[name][index])
        return model


def _next_batches(streams: list):
    """One mini-batch from each seed's stream, stacked: x (k, B, D), y (k, B)."""
    xs, ys = zip(*(next(stream) for stream in streams))
    return torch.stack(xs), torch.stack(ys)


def train_seeds(
    build_model,
    data: Splits,
    make_optimizer,
    seeds,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 64,
    eval_every: int = 100,
    device=None,
    record=None,
    progress: bool = True,
    description: str = "training",
    augment=None,
    schedule=None,
    schedule_per: str = "step",
) -> tuple[list, list]:
    """Train one model per seed, all k at once as one batched computation; return ``(models, histories)``.

    ``models[i]`` and ``histories[i]`` belong to ``seeds[i]``. Seed s gets what ``train``
    would give it: ``set_seed(s)`` then ``build_model()`` (its own initialization), and its
    own mini-batch order (``TensorBatches(..., seed=s)``); its numbers equal a separate
    ``train`` run up to rounding (batched kernels add in another order). Dropout masks are
    the exception: they are drawn for all models at once, so they differ from a separate run's.

    ``make_optimizer(params)`` gets a list of stacked parameters, each ``(k, ...)``, and
    returns a torch optimizer, e.g. ``lambda params: torch.optim.SGD(params, lr=0.1)``. It
    must act elementwise, as SGD, momentum, weight decay, Adam, AdamW and RMSprop do; one
    that takes a norm over a whole tensor (LARS, clipping by norm) would mix the seeds.

    Every ``eval_every`` steps (and at step 0) each seed's weights are copied into its own
    model, which is evaluated and passed to ``record`` exactly as in ``train``. A seed whose
    loss becomes NaN or infinite gets ``diverged = True`` and keeps that moment's weights;
    the others go on. Forward hooks on the models fire only in evaluation and ``record``:
    the batched steps run ``models[0]``'s code under vmap with the stacked tensors swapped in.

    ``augment`` is as in ``train``, called once per seed and step with that seed's
    generator ``augment_rng(seed)``, so each seed sees the augmentations a separate run would.
    It may also be a list with one entry (a function or None) per seed: then one batched run
    trains several augmentations side by side, each on its own seeds.

    ``schedule`` and ``schedule_per`` are as in ``train``: one schedule, shared by all seeds
    (not with ``SeedwiseSGD``, whose rates are fixed per seed). ``schedule`` may also be a list
    with one function per seed, so that one batched run trains several schedules side by side,
    each on its own seeds: see ``SeedwiseSchedules`` for how, and which optimizers allow it.
    ``step_loss`` holds each seed's own mini-batch losses, ``lr`` and ``step_lr`` its own rates. ``on_step`` and early stopping exist in ``train`` only: both act on
    one model between updates, and here the k models update as one.
    """
    seeds = _check_seeds(seeds)
    augments = _augments_per_seed(augment, seeds)
    rngs = [augment_rng(seed) for seed in seeds]
    if not callable(make_optimizer):
        raise TypeError(f"make_optimizer: expected a function of a parameter list, got {type(make_optimizer).__name__}")
    steps = _check_length(steps, epochs, batch_size, eval_every, len(data.y_train))
    steps_per_epoch = len(data.y_train) // batch_size
    if isinstance(schedule, (list, tuple)):
        if len(schedule) != len(seeds):
            raise ValueError(f"schedule: expected one function per seed ({len(seeds)}), got {len(schedule)}")
        if any(one is None for one in schedule):
            index = [one is None for one in schedule].index(True)
            raise TypeError(f"schedule[{index}]: expected a function step -> learning rate, got None")
        rate_of_update = SeedwiseSchedules([_rate_of_update(one, schedule_per, steps_per_epoch) for one in schedule])
    else:
        rate_of_update = _rate_of_update(schedule, schedule_per, steps_per_epoch)
    models = _build_models(build_model, seeds)
    device = device or next(models[0].parameters()).device
    for model in models:
        model.to(device).train()
    train_split, val_split = _splits_on(data, models[0], device)
    streams = [iter(TensorBatches(*train_split, batch_size, seed=seed)) for seed in seeds]
    stacked = StackedModels(models)
    optimizer = make_optimizer(list(stacked.params.values()))
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"make_optimizer: expected it to return a torch optimizer, got {type(optimizer).__name__}")
    if rate_of_update is not None and isinstance(optimizer, SeedwiseSGD):
        raise ValueError("schedule: SeedwiseSGD keeps a fixed rate per seed; pass a schedule with torch.optim.SGD")
    seedwise = rate_of_update if isinstance(rate_of_update, SeedwiseSchedules) else None

    def rates_now(t: int) -> list:
        """Each seed's rate for update t (the optimizer's own when one schedule is shared, or none is given)."""
        return seedwise.rates(t) if seedwise is not None else _rates_now(optimizer, len(seeds))

    histories = [History() for _ in seeds]
    alive = torch.ones(len(seeds), dtype=torch.bool, device=device)
    # Sums since the previous record, one entry per seed, kept on the device (no .item() per
    # seed and step); in float64, so that they add up exactly as train's Python floats do.
    loss_sums = torch.zeros(len(seeds), dtype=torch.float64, device=device)
    correct = torch.zeros(len(seeds), dtype=torch.int64, device=device)
    count = 0
    # Each update's losses (k,) and rates (k values), held until they move into the histories
    # at the next record (or divergence): one transfer from the device per record, not per step.
    step_losses, step_rates = [], []

    def move_step_logs():
        losses_by_seed = torch.stack(step_losses).T.tolist() if step_losses else [[] for _ in seeds]
        for index, history in enumerate(histories):
            if not history.diverged:
                history.step_loss.extend(losses_by_seed[index])
                history.step_lr.extend(rates[index] for rates in step_rates)
        step_losses.clear(), step_rates.clear()

    def take_records(step):
        move_step_logs()
        rates = rates_now(max(step - 1, 0))  # as train: the last update's rate (at step 0, the first's)
        for index, history in enumerate(histories):
            if not history.diverged:
                running = (loss_sums[index].item(), correct[index].item(), count)
                _take_record(history, stacked.copy_to_model(index), step, rates[index], running, train_split, val_split,
                             record)

    if seedwise is None:
        _apply_schedule(optimizer, rate_of_update, 0)  # so that step 0 records the rate of the first update
    take_records(0)
    bar = tqdm(range(1, steps + 1), desc=description, disable=not progress, mininterval=0.5)
    for step in bar:
        if seedwise is None:
            _apply_schedule(optimizer, rate_of_update, step - 1)
        x, y = _next_batches(streams)                                                  # (k, B, D), (k, B)
        x, target = _augment_each_seed(augments, x, y, rngs) if any(augments) else (x, y)
        logits = stacked(x)                                                            # (k, B, C)
        losses = nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(0, 1), reduction="none")
        losses = losses.view(y.shape).mean(dim=1)                                      # (k,): each model's mean loss
        diverging = alive & ~torch.isfinite(losses)
        if diverging.any():
            move_step_logs()  # the diverging seeds' updates so far, before their histories close
            for index in diverging.nonzero().flatten().tolist():
                histories[index].diverged = True
                stacked.copy_to_model(index)  # it keeps this moment's state, as in train
            alive &= ~diverging
            if not alive.any():
                break
        # Why one backward gives each model exactly its own update: d(sum of losses)/d(loss i) = 1,
        # and loss i depends only on entry i of each stacked parameter, so entry i of the
        # gradient is model i's own gradient. SGD, momentum, weight decay and Adam act
        # elementwise, so entry i is then updated exactly as a separate optimizer would.
        # For the same reason a diverged model needs no masking: the sum's gradient with respect
        # to each loss is 1, NaN or not, so its NaNs stay in its own entries.
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        if seedwise is None:
            optimizer.step()
        else:
            seedwise.step(optimizer, step - 1)
        step_losses.append(losses.detach())
        step_rates.append(rates_now(step - 1))
        with torch.no_grad():
            loss_sums += losses.to(torch.float64) * y.shape[1]
            correct += (logits.argmax(dim=2) == y).sum(dim=1)
        count += y.shape[1]
        if step % eval_every == 0 or step == steps:
            take_records(step)
            bar.set_postfix(val_acc=f"{np.mean([h.val_acc[-1] for h in histories if not h.diverged]):.3f}")
            loss_sums.zero_(), correct.zero_()
            count = 0
    bar.close()
    for index, history in enumerate(histories):
        if not history.diverged:
            stacked.copy_to_model(index)
    return models, histories


class SeedwiseSchedules:
    """One learning-rate schedule per seed of a ``train_seeds`` run: seed i's rate for update t is
    ``rate_functions[i](t)``.

    A torch optimizer has one rate per parameter group, and here every group holds all k seeds
    stacked. The way round: take the optimizer's step at rate 1, then scale each seed's move by
    its own rate, p_i ← p_i,before + rate_i · (p_i,after − p_i,before). This is exact when the
    optimizer's move is its rate times a direction that the rate does not change: SGD (with
    momentum and weight decay), Adam, AdamW (its decoupled decay is rate · λ · p, also
    proportional) and RMSprop all move that way, and their state (momentum, moment estimates)
    never depends on the rate. An optimizer whose state did would be scaled wrongly.
    """

    def __init__(self, rate_functions: list):
        self.rate_functions = list(rate_functions)

    def rates(self, t: int) -> list:
        """Each seed's rate for update t."""
        return [rate_of(t) for rate_of in self.rate_functions]

    @torch.no_grad()
    def step(self, optimizer: torch.optim.Optimizer, t: int) -> None:
        """Update t: the optimizer's step at rate 1, then each seed's move scaled by its own rate."""
        for group in optimizer.param_groups:
            group["lr"] = 1.0
        params = [p for group in optimizer.param_groups for p in group["params"]]
        before = [p.clone() for p in params]
        optimizer.step()
        rates = torch.tensor(self.rates(t), dtype=torch.float64)
        for p, start in zip(params, before):
            per_seed = rates.to(p.device, p.dtype).view(-1, *[1] * (p.dim() - 1))   # (k, 1, ...)
            torch.lerp(start, p, per_seed, out=p)                                   # start + rate_i · (p − start)


class SeedwiseSGD(torch.optim.Optimizer):
    """Plain SGD with its own learning rate, and weight decay, for each seed of a ``train_seeds`` run.

    ``train_seeds`` hands the optimizer every parameter stacked over the k seeds, shape
    (k, ...), entry i belonging to seed i; ``lrs[i]`` is seed i's rate and
    ``weight_decays[i]`` (default 0) its λ. Each step is torch.optim.SGD's:
    p ← p − lr · (grad + λ · p), with λ on every parameter, biases included, as
    ``SGD(weight_decay=λ)`` does. So one batched run can train several rates or decays,
    each with its own seeds. The update is elementwise, so the seeds never mix. Use
    ``torch.optim.SGD`` when all seeds share one rate and one decay.
    """

    def __init__(self, params, lrs, weight_decays=None):
        super().__init__(params, defaults={})
        self.lrs = self._one_per_seed("lrs", lrs, "rate")
        self.weight_decays = self._one_per_seed("weight_decays", [0.0] * len(self.lrs) if weight_decays is None
                                                else weight_decays, "decay")

    def _one_per_seed(self, name: str, values, what: str) -> torch.Tensor:
        values = np.asarray(values, dtype=float)
        if values.ndim != 1 or len(values) == 0 or not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(f"{name}: expected one finite {what} >= 0 per seed, got {values.tolist()}")
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() == 0 or p.shape[0] != len(values):
                    raise ValueError(f"{name}: got {len(values)} values, but a parameter of shape {tuple(p.shape)} "
                                     f"is stacked over {p.shape[0] if p.dim() else 0} seeds")
        return torch.as_tensor(values, dtype=torch.float64)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                per_seed = (-1, *[1] * (p.dim() - 1))   # (k, 1, ...): one value per seed
                rate = self.lrs.to(p.device, p.dtype).view(per_seed)
                gradient = p.grad
                if self.weight_decays.any():   # skipped at 0: 0 · p would still turn an infinite p into NaN
                    gradient = gradient + self.weight_decays.to(p.device, p.dtype).view(per_seed) * p
                p.sub_(rate * gradient)


def accuracy_on_test(model: nn.Module, data: Splits, device=None) -> float:
    """Accuracy on the held-out test split (report it once, at the end, not for choosing)."""
    device = device or next(model.parameters()).device
    x_test, y_test = to_tensors(data.x_test, data.y_test, device)
    return evaluate(model, x_test, y_test)[1]


# ---------------------------------------------------------------------------------------
# Reporting over seeds: mean ± spread
# ---------------------------------------------------------------------------------------

def mean_spread(values):
    """Mean and spread over seeds: ``values`` (k,) → ``(mean, std)`` floats; (k, T) → two (T,) arrays.

    The spread is the sample standard deviation across the k seeds (``ddof=1``, divided by
    k − 1): how far one run typically lands from the mean. It needs k ≥ 2. (The mean itself
    is known more precisely, to about std / √k.) NaN (a run that diverged) gives NaN.
    """
    values = check_array("values", np.asarray(values, dtype=float), ndim=(1, 2), finite=False)
    if len(values) < 2:
        raise ValueError(f"values: need at least 2 seeds to estimate a spread, got {len(values)}")
    mean, std = values.mean(axis=0), values.std(axis=0, ddof=1)
    return (float(mean), float(std)) if values.ndim == 1 else (mean, std)


def format_mean_spread(values, digits: int = 3) -> str:
    """One number per seed, ``values`` (k,), as ``"0.623 ± 0.012"``: mean ± sample std (ddof=1).

    For a final metric take ``final_over_seeds(histories)``: a diverged run's entry is NaN
    there (``history.final()`` would give its last value before it diverged).
    """
    check_int("digits", digits, minimum=0)
    mean, std = mean_spread(np.asarray(values, dtype=float).reshape(-1))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def metric_over_seeds(histories: list, metric: str = "val_acc"):
    """One metric of k runs as an array: ``(steps (T,), values (k, T))``, for a mean curve with a band.

    The runs must have recorded at the same steps (as ``train_seeds`` gives them). A run that
    diverged stopped recording early; its missing entries are NaN, so that a mean over seeds
    is NaN from there on rather than silently the mean of the survivors.
    """
    check_choice("metric", metric, METRICS)
    if len(histories) == 0:
        raise ValueError("histories: expected at least one run")
    steps = max((history.steps for history in histories), key=len)
    values = np.full((len(histories), len(steps)), np.nan)
    for index, history in enumerate(histories):
        if history.steps != steps[: len(history.steps)]:
            raise ValueError(f"histories: run {index} recorded at other steps than the longest run")
        values[index, : len(history.steps)] = getattr(history, metric)
    return np.asarray(steps), values


def final_over_seeds(histories: list, metric: str = "val_acc") -> np.ndarray:
    """Each run's last recorded ``metric``, shape (k,); NaN for a run that diverged."""
    finals = metric_over_seeds(histories, metric)[1][:, -1]
    # A diverged run stopped recording, so its row is padded with NaN, unless every run diverged:
    # then the longest row is itself cut short, and its last value is from before the divergence.
    finals[[history.diverged for history in histories]] = np.nan
    return finals


@dataclass(frozen=True)
class Comparison:
    """Two configurations compared over seeds by the book's rule (see ``compare_over_seeds``)."""

    difference: float   # mean of a minus mean of b
    margin: float       # spread of a plus spread of b: what the difference must exceed to count
    verdict: str        # "<a> higher", "<b> higher", "no difference at this scale" or "not comparable: ..."

    def __str__(self) -> str:
        return f"{self.difference:+.3f}, spreads added {self.margin:.3f}: {self.verdict}"


def compare_over_seeds(a, b, names=("a", "b"), larger: str = "higher") -> Comparison:
    """Compare one number per seed of two configurations, ``a`` (k_a,) and ``b`` (k_b,).

    The book's rule: a is ``larger`` than b when ``mean_a − mean_b > spread_a + spread_b``
    (spread: the sample std over seeds, as ``mean_spread`` gives it), and the other way
    round; a smaller difference is "no difference at this scale". It is a rule of thumb,
    not a significance test: when nothing differs (normal noise, k seeds on each side) it
    still calls a winner in about 8% of comparisons at k = 3, 3.5% at k = 4 and 1.6% at
    k = 5 (a two-sided t-test at p < 0.05: 5%). So at 3 seeds one verdict alone can be a
    fluke; a conclusion should rest on a margin well above the spreads, or on several
    verdicts that agree. A NaN (a diverged run, or a threshold never reached) makes the
    two not comparable by this rule.
    """
    if not (isinstance(names, (tuple, list)) and len(names) == 2 and all(isinstance(n, str) for n in names)):
        raise TypeError(f"names: expected two strings, got {names!r}")
    if not isinstance(larger, str):
        raise TypeError(f"larger: expected a string such as 'higher', got {type(larger).__name__}")
    (mean_a, spread_a), (mean_b, spread_b) = mean_spread(a), mean_spread(b)
    difference, margin = mean_a - mean_b, spread_a + spread_b
    if np.isnan(difference) or np.isnan(margin):
        verdict = "not comparable: some seeds have no value (diverged, or never reached it)"
    elif difference > margin:
        verdict = f"{names[0]} {larger}"
    elif -difference > margin:
        verdict = f"{names[1]} {larger}"
    else:
        verdict = "no difference at this scale"
    return Comparison(difference, margin, verdict)
