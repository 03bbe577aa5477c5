"""A small torch training loop: step-based, with evaluation, progress bar and history.

Every chapter trains through this one function, so train/eval mode, device placement
and bookkeeping are written once. Experiments stay comparable: two runs with the same
seed see the same mini-batches in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from lib.checks import check_int
from lib.data import Splits, TensorBatches, to_tensors


@dataclass
class History:
    """What a run recorded. ``steps[i]`` is the step at which entry i of every list was taken.

    ``train_loss`` / ``train_acc`` average the mini-batches since the previous record;
    ``val_loss`` / ``val_acc`` are measured on the whole validation split in eval mode.
    ``extra`` holds what a ``record`` callback returned, one list per key.
    """

    steps: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    diverged: bool = False

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
) -> History:
    """Train ``model`` with cross-entropy on ``data`` for ``steps`` mini-batch steps (or ``epochs``).

    Every ``eval_every`` steps (and at step 0, before any update) the validation loss and
    accuracy are measured in eval mode, and ``record(model)`` is called if given (in eval
    mode, without gradients); it returns
    a dict of numbers or arrays that is appended to ``history.extra``. Training stops early,
    with ``history.diverged = True``, if the loss becomes NaN or infinite.
    """
    if (steps is None) == (epochs is None):
        raise ValueError("steps, epochs: give exactly one of them")
    check_int("batch_size", batch_size, minimum=1)
    check_int("eval_every", eval_every, minimum=1)
    if epochs is not None:
        steps = check_int("epochs", epochs, minimum=1) * (len(data.y_train) // batch_size)
    check_int("steps", steps, minimum=1)
    device = device or next(model.parameters()).device
    model.to(device)
    x_train, y_train = to_tensors(data.x_train, data.y_train, device)
    x_val, y_val = to_tensors(data.x_val, data.y_val, device)
    batches = iter(TensorBatches(x_train, y_train, batch_size, seed=seed))

    history = History()
    running_loss, running_correct, running_count = 0.0, 0, 0

    def take_record(step):
        history.steps.append(step)
        if running_count:
            history.train_loss.append(running_loss / running_count)
            history.train_acc.append(running_correct / running_count)
        else:  # step 0: no batch seen yet, so evaluate on the whole training split
            loss, acc = evaluate(model, x_train, y_train)
            history.train_loss.append(loss)
            history.train_acc.append(acc)
        val_loss, val_acc = evaluate(model, x_val, y_val)
        history.val_loss.append(val_loss)
        history.val_acc.append(val_acc)
        if record is not None:
            model.eval()  # so that recording never updates batch-norm running statistics
            with torch.no_grad():
                for key, value in record(model).items():
                    history.extra.setdefault(key, []).append(value)
            model.train()

    model.train()
    take_record(0)
    bar = tqdm(range(1, steps + 1), desc=description, disable=not progress, mininterval=0.5)
    for step in bar:
        x, y = next(batches)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            history.diverged = True
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running_loss += loss.item() * len(y)
        running_correct += (logits.argmax(dim=1) == y).sum().item()
        running_count += len(y)
        if step % eval_every == 0 or step == steps:
            take_record(step)
            bar.set_postfix(val_acc=f"{history.val_acc[-1]:.3f}")
            running_loss, running_correct, running_count = 0.0, 0, 0
    bar.close()
    model.train()
    return history


def accuracy_on_test(model: nn.Module, data: Splits, device=None) -> float:
    """Accuracy on the held-out test split (report it once, at the end, not for choosing)."""
    device = device or next(model.parameters()).device
    x_test, y_test = to_tensors(data.x_test, data.y_test, device)
    return evaluate(model, x_test, y_test)[1]

