"""Learning-rate schedules, the learning-rate range test, and a loss-spike guard.

A schedule is a plain function of the step t = 0, 1, 2, ... (the number of optimizer updates
already done) that returns the rate for update t, written as the lesson writes the formula:

    constant        α_t = α₀
    step            α_t = α₀ · γ^(number of milestones ≤ t)                             (He et al. 2016)
    cosine          α_t = α_min + ½(α₀ − α_min)(1 + cos(π t / T)),  α_min for t ≥ T       (Loshchilov & Hutter 2017)
    linear decay    α_t = α₀ · (1 − (1 − e) · min(t, T) / T)
    inverse sqrt    α_t = c · d^(−½) · min(s^(−½), s · w^(−3/2)),  s = t + 1             (Vaswani et al. 2017)
    warmup          α_t = f(0) · (a + (1 − a) t / w) for t < w,  f(t − w) after          (Goyal et al. 2017)
    restarts        α_t = α_min + ½(α₀ − α_min)(1 + cos(π T_cur / T_i)),  T_i = T₀ mⁱ     (Loshchilov & Hutter 2017)
    one-cycle       up from α_max/div to α_max, then down to α_max/(div · final_div)     (torch's; Smith & Topin 2019)
    range test      α_t = α_lo · (α_hi / α_lo)^(t / (N − 1))                             (fastai's lr_find, 2020)

The convention is torch's: record ``optimizer.param_groups[0]["lr"]``, then ``optimizer.step()``,
then ``scheduler.step()``; after t calls to ``scheduler.step()`` the rate is f(t).
``make_schedule(name, **params)`` checks the parameters once and returns a callable step -> rate;
``torch_scheduler(name, optimizer, **params)`` builds torch's counterpart of the same schedule and
``ScheduleLR`` drives any torch optimizer with one of ours, so lib and torch can be compared value
for value (``compare_with_torch``).

The range test (``lr_range_test``) raises the rate exponentially during a short run and reads a
starting rate off where the loss falls fastest: fastai's ``lr_find`` (Howard & Gugger 2020), a
variant of Smith's (2017) test, which raised the rate linearly over several epochs and read the
accuracy. ``global_grad_norm`` and ``SpikeDetector`` watch a run for loss or gradient spikes,
judged by median and MAD.
"""
from __future__ import annotations

import copy
import inspect
import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.optim import lr_scheduler

from lib.checks import check_choice, check_int, check_positive, check_probability
from lib.data import Splits, TensorBatches, to_tensors

__all__ = [
    "constant_lr", "step_lr", "cosine_lr", "linear_decay_lr", "inverse_sqrt_lr", "warmup_lr",
    "cosine_restarts_lr", "one_cycle_lr", "exponential_range_lr",
    "SCHEDULES", "Schedule", "make_schedule", "schedule_values",
    "torch_scheduler", "ScheduleLR", "compare_with_torch",
    "RangeTest", "lr_range_test", "global_grad_norm", "SpikeDetector",
]


# ---------------------------------------------------------------------------------------
# Argument checks shared by the schedules
# ---------------------------------------------------------------------------------------

def _check_rate(name: str, value, allow_zero: bool = True) -> float:
    """A learning rate: a finite real number ≥ 0 (or > 0 where a ratio or a log needs it)."""
    return check_positive(name, value, allow_zero=allow_zero)


def _check_min_rate(min_lr, base_name: str, base_lr: float) -> float:
    """``min_lr`` ≥ 0 and no larger than the rate it decays from."""
    min_lr = _check_rate("min_lr", min_lr)
    if min_lr > base_lr:
        raise ValueError(f"min_lr: expected at most {base_name}={base_lr}, got {min_lr}")
    return min_lr


def _check_milestones(milestones) -> list:
    if not isinstance(milestones, (list, tuple)):
        raise TypeError(f"milestones: expected a list of integers, got {type(milestones).__name__}")
    checked = [check_int(f"milestones[{i}]", m, minimum=1) for i, m in enumerate(milestones)]
    if any(later <= earlier for earlier, later in zip(checked, checked[1:])):
        raise ValueError(f"milestones: expected strictly increasing steps, got {list(milestones)}")
    return checked


def _check_gamma(gamma) -> float:
    gamma = check_positive("gamma", gamma)
    if gamma > 1:
        raise ValueError(f"gamma: expected a factor in (0, 1], got {gamma}")
    return gamma


# ---------------------------------------------------------------------------------------
# The schedules: plain functions of the step
# ---------------------------------------------------------------------------------------

def constant_lr(step: int, base_lr: float) -> float:
    """α_t = α₀ for every step: the baseline every schedule is compared with."""
    check_int("step", step, minimum=0)
    return _check_rate("base_lr", base_lr)


def step_lr(step: int, base_lr: float, milestones, gamma: float = 0.1) -> float:
    """Step decay: α_t = α₀ · γ^(number of milestones ≤ t).

    ``milestones``: strictly increasing positive steps (torch's ``MultiStepLR``; ``StepLR`` is the
    special case of milestones every ``step_size`` steps). He et al. (2016) divided the rate by 10
    (γ = 0.1) when the error plateaued (ImageNet) and at iterations 32k and 48k of 64k, ½ and ¾ of
    the run (CIFAR-10); dividing by 10 every 30 epochs of 90 is torchvision's ImageNet reference
    recipe, stepping once per epoch.
    """
    check_int("step", step, minimum=0)
    base_lr = _check_rate("base_lr", base_lr)
    milestones = _check_milestones(milestones)
    gamma = _check_gamma(gamma)
    decays = sum(1 for m in milestones if m <= step)
    return base_lr * gamma**decays


def cosine_lr(step: int, base_lr: float, total_steps: int, min_lr: float = 0.0) -> float:
    """Cosine annealing: α_t = α_min + ½(α₀ − α_min)(1 + cos(π t / T)), T = ``total_steps``.

    For t ≥ T the rate stays at α_min. torch's ``CosineAnnealingLR(T_max=T, eta_min=α_min)``
    instead keeps following the cosine past T, so its rate climbs back up; the two agree for t ≤ T.
    """
    check_int("step", step, minimum=0)
    base_lr = _check_rate("base_lr", base_lr)
    total_steps = check_int("total_steps", total_steps, minimum=1)
    min_lr = _check_min_rate(min_lr, "base_lr", base_lr)
    progress = min(step, total_steps) / total_steps
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))


def linear_decay_lr(step: int, base_lr: float, total_steps: int, end_factor: float = 0.0) -> float:
    """Linear decay: α_t = α₀ · (1 − (1 − e) · min(t, T) / T), from α₀ to e·α₀ at T and flat after.

    torch: ``LinearLR(start_factor=1, end_factor=e, total_iters=T)``; with e = 0 the rate of
    update T is exactly 0.
    """
    check_int("step", step, minimum=0)
    base_lr = _check_rate("base_lr", base_lr)
    total_steps = check_int("total_steps", total_steps, minimum=1)
    end_factor = check_probability("end_factor", end_factor)
    return base_lr * (1 - (1 - end_factor) * min(step, total_steps) / total_steps)


def inverse_sqrt_lr(step: int, d_model: int, warmup_steps: int, scale: float = 1.0) -> float:
    """The Transformer's schedule (Vaswani et al. 2017): c · d^(−½) · min(s^(−½), s · w^(−3/2)).

    The paper counts steps from 1, so s = t + 1. The rate rises linearly for w = ``warmup_steps``
    steps, peaks at c · (d · w)^(−½), then decays as 1/√s. ``d_model`` is the model width d,
    ``scale`` the factor c. torch: ``LambdaLR`` with base rate c · d^(−½) and the factor
    ``lambda t: min((t + 1) ** -0.5, (t + 1) * w ** -1.5)``.
    """
    check_int("step", step, minimum=0)
    d_model = check_int("d_model", d_model, minimum=1)
    warmup_steps = check_int("warmup_steps", warmup_steps, minimum=1)
    scale = _check_rate("scale", scale, allow_zero=False)
    return scale * d_model**-0.5 * _inverse_sqrt_factor(step, warmup_steps)


def _inverse_sqrt_factor(step: int, warmup_steps: int) -> float:
    s = step + 1  # the paper's step_num starts at 1
    return min(s**-0.5, s * warmup_steps**-1.5)


def warmup_lr(step: int, schedule, warmup_steps: int, start_factor: float = 0.0) -> float:
    """Linear warmup into ``schedule`` (Goyal et al. 2017):

      t < w:   α_t = f(0) · (a + (1 − a) · t / w)      (from a·f(0) up towards f(0))
      t ≥ w:   α_t = f(t − w)                          (the wrapped schedule starts after the warmup)

    ``schedule``: any function step -> rate (f); w = ``warmup_steps``; a = ``start_factor`` in
    [0, 1]. A run of T steps therefore gives the wrapped schedule T − w steps. torch:
    ``SequentialLR([LinearLR(start_factor=a, end_factor=1, total_iters=w), <f's scheduler>],
    milestones=[w])`` (torch needs a > 0).
    """
    check_int("step", step, minimum=0)
    if not callable(schedule):
        raise TypeError(f"schedule: expected a function step -> rate, got {type(schedule).__name__}")
    warmup_steps = check_int("warmup_steps", warmup_steps, minimum=1)
    start_factor = check_probability("start_factor", start_factor)
    if step >= warmup_steps:
        return schedule(step - warmup_steps)
    return schedule(0) * (start_factor + (1 - start_factor) * step / warmup_steps)


def cosine_restarts_lr(step: int, base_lr: float, first_period: int, period_mult: int = 1,
                       min_lr: float = 0.0) -> float:
    """SGDR, cosine annealing with warm restarts (Loshchilov & Hutter 2017):

      α_t = α_min + ½(α₀ − α_min)(1 + cos(π T_cur / T_i))

    where the periods are T₀, T₀·m, T₀·m², ... (T₀ = ``first_period``, m = ``period_mult``, an
    integer ≥ 1) and T_cur counts the steps since the last restart. At each restart the rate
    jumps back to α₀. torch: ``CosineAnnealingWarmRestarts(T_0, T_mult, eta_min)``.
    """
    check_int("step", step, minimum=0)
    base_lr = _check_rate("base_lr", base_lr)
    period = check_int("first_period", first_period, minimum=1)
    period_mult = check_int("period_mult", period_mult, minimum=1)
    min_lr = _check_min_rate(min_lr, "base_lr", base_lr)
    steps_into_period = step
    if period_mult == 1:
        steps_into_period = step % period
    while steps_into_period >= period:  # only when the periods grow: at most log_m(t) passes
        steps_into_period -= period
        period *= period_mult
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * steps_into_period / period))


def _one_cycle_phases(total_steps: int, pct_start: float, three_phase: bool) -> list:
    """[(end step, start name, end name)] as torch's OneCycleLR lays the phases out."""
    up_end = float(pct_start * total_steps) - 1
    if three_phase:
        return [(up_end, "initial", "max"), (float(2 * pct_start * total_steps) - 2, "max", "initial"),
                (total_steps - 1, "initial", "min")]
    return [(up_end, "initial", "max"), (total_steps - 1, "max", "min")]


def one_cycle_lr(step: int, max_lr: float, total_steps: int, pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False) -> float:
    """The one-cycle policy, exactly as torch's ``OneCycleLR`` (and fastai's ``fit_one_cycle``) define it:
    cosine phases, ``pct_start`` 0.3, ``div_factor`` 25, ``final_div_factor`` 10⁴. Smith & Topin's
    (2019) paper used a different shape: a linear, roughly symmetric cycle up and down, then a short
    final phase that anneals the rate far below the initial one, with momentum cycled against the rate.

    Three rates: initial α_max / div, peak α_max, final α_max / (div · final_div). Phase ends, in
    steps (torch's layout): the rise ends at p·T − 1 and the fall at T − 1 (p = ``pct_start``,
    T = ``total_steps``). With ``three_phase`` the fall returns to the initial rate at 2p·T − 2
    and a last phase anneals down to the final rate at T − 1. Within a phase from step a to b,
    between rates α_a and α_b:

      α_t = α_b + ½(α_a − α_b)(1 + cos(π (t − a) / (b − a)))

    For t ≥ T − 1 the rate stays at the final rate (torch refuses to step past T).
    Momentum cycling (torch's ``cycle_momentum``) is out of scope: only the rate is scheduled.
    """
    check_int("step", step, minimum=0)
    max_lr = _check_rate("max_lr", max_lr, allow_zero=False)
    total_steps = check_int("total_steps", total_steps, minimum=2)
    pct_start = check_probability("pct_start", pct_start)
    if pct_start in (0.0, 1.0):
        raise ValueError(f"pct_start: expected a fraction strictly between 0 and 1, got {pct_start}")
    div_factor = check_positive("div_factor", div_factor)
    final_div_factor = check_positive("final_div_factor", final_div_factor)
    phases = _one_cycle_phases(total_steps, pct_start, bool(three_phase))
    ends = [0.0] + [end for end, _, _ in phases]
    if any(later <= earlier for earlier, later in zip(ends, ends[1:])):
        raise ValueError(f"pct_start: {pct_start} leaves a phase of no steps for total_steps={total_steps} "
                         f"(phase ends at steps {ends[1:]})")
    rates = {"initial": max_lr / div_factor, "max": max_lr}
    rates["min"] = rates["initial"] / final_div_factor
    start = 0.0
    for index, (end, start_name, end_name) in enumerate(phases):
        if step <= end or index == len(phases) - 1:
            fraction = min(step - start, end - start) / (end - start)
            return rates[end_name] + (rates[start_name] - rates[end_name]) / 2.0 * (math.cos(math.pi * fraction) + 1)
        start = end


def exponential_range_lr(step: int, min_lr: float, max_lr: float, num_steps: int) -> float:
    """The range test's rate: α_t = α_lo · (α_hi / α_lo)^(t / (N − 1)), from α_lo at t = 0 to α_hi at N − 1.

    Equal ratios between successive rates, so the N steps spread evenly over a log axis.
    """
    check_int("step", step, minimum=0)
    min_lr = _check_rate("min_lr", min_lr, allow_zero=False)
    max_lr = _check_rate("max_lr", max_lr, allow_zero=False)
    if max_lr <= min_lr:
        raise ValueError(f"max_lr: expected more than min_lr={min_lr}, got {max_lr}")
    num_steps = check_int("num_steps", num_steps, minimum=2)
    return min_lr * (max_lr / min_lr) ** (step / (num_steps - 1))


# ---------------------------------------------------------------------------------------
# Schedules by name
# ---------------------------------------------------------------------------------------

SCHEDULES = {
    "constant": constant_lr,
    "step": step_lr,
    "cosine": cosine_lr,
    "linear": linear_decay_lr,
    "inverse_sqrt": inverse_sqrt_lr,
    "cosine_restarts": cosine_restarts_lr,
    "one_cycle": one_cycle_lr,
}


class Schedule:
    """A schedule function with its parameters fixed: ``schedule(step) -> rate``.

    Like ``functools.partial``, with a repr that reads as the call, e.g.
    ``cosine_lr(base_lr=0.1, total_steps=1000)``.
    """

    def __init__(self, function, **params):
        self.function, self.params = function, params

    def __call__(self, step: int) -> float:
        return self.function(step, **self.params)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.params.items())
        return f"{self.function.__name__}({arguments})"


def _check_params(name: str, function, params: dict) -> None:
    """Unknown keyword arguments raise here, naming the schedule and what it takes."""
    accepted = list(inspect.signature(function).parameters)[1:]  # all but the step
    unknown = [key for key in params if key not in accepted]
    if unknown:
        raise TypeError(f"params: the {name!r} schedule takes {accepted} (and warmup_steps, "
                        f"warmup_start_factor), got unexpected {unknown}")


def _split_warmup(name: str, params: dict):
    """(params of the schedule itself, warmup steps or None, warmup start factor).

    inverse_sqrt has its own ``warmup_steps``, so there it stays a parameter of the schedule.
    The wrapped schedule's ``total_steps`` becomes ``total_steps − warmup_steps``, so that the
    whole run, warmup included, is ``total_steps`` long.
    """
    params = dict(params)
    own_warmup = "warmup_steps" in inspect.signature(SCHEDULES[name]).parameters
    warmup_steps = None if own_warmup else params.pop("warmup_steps", None)
    if warmup_steps is None:
        if "warmup_start_factor" in params:
            raise ValueError("warmup_start_factor: given without a warmup (warmup_steps)")
        return params, None, 0.0
    start_factor = check_probability("warmup_start_factor", params.pop("warmup_start_factor", 0.0))
    warmup_steps = check_int("warmup_steps", warmup_steps, minimum=1)
    if "total_steps" in params:
        total_steps = check_int("total_steps", params["total_steps"], minimum=1)
        if warmup_steps >= total_steps:
            raise ValueError(f"warmup_steps: expected fewer than total_steps={total_steps} "
                             f"(warmup longer than the run), got {warmup_steps}")
        params["total_steps"] = total_steps - warmup_steps
    return params, warmup_steps, start_factor


def make_schedule(name: str, **params) -> Schedule:
    """The schedule ``name`` (a key of ``SCHEDULES``) with ``params`` fixed, as a function step -> rate.

    The parameters are checked once, here (the schedule is evaluated at step 0), so a mistake
    surfaces when the schedule is made, not in the middle of a run.
    Warmup: ``warmup_steps=w`` (and optionally ``warmup_start_factor=a``, default 0) wraps the
    schedule in ``warmup_lr``; the run, warmup included, lasts ``total_steps``, so the wrapped
    schedule gets ``total_steps − w`` steps. (For "inverse_sqrt", ``warmup_steps`` is the
    schedule's own parameter.)
    """
    check_choice("name", name, list(SCHEDULES))
    own_params, warmup_steps, start_factor = _split_warmup(name, params)
    _check_params(name, SCHEDULES[name], own_params)
    schedule = Schedule(SCHEDULES[name], **own_params)
    if warmup_steps is not None:
        schedule = Schedule(warmup_lr, schedule=schedule, warmup_steps=warmup_steps, start_factor=start_factor)
    schedule(0)  # runs every argument check now
    return schedule


def schedule_values(schedule, num_steps: int) -> np.ndarray:
    """The rates of steps 0 .. num_steps − 1, shape (num_steps,), for plotting."""
    if not callable(schedule):
        raise TypeError(f"schedule: expected a function step -> rate, got {type(schedule).__name__}")
    num_steps = check_int("num_steps", num_steps, minimum=1)
    return np.array([schedule(t) for t in range(num_steps)], dtype=np.float64)


# ---------------------------------------------------------------------------------------
# The torch side: torch's own schedulers, and an adapter for ours
# ---------------------------------------------------------------------------------------

def _set_base_lr(optimizer: torch.optim.Optimizer, base_lr: float) -> None:
    """Every group starts from ``base_lr``; a scheduler built next takes it as its base rate."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr
        group.pop("initial_lr", None)  # else a new scheduler would keep an earlier scheduler's base


def _torch_main_scheduler(name: str, optimizer, params: dict):
    """torch's scheduler for ``name`` without warmup (``params`` already checked)."""
    base_lr = params.get("base_lr", 0.0)
    if name == "inverse_sqrt":
        warmup, scale = params["warmup_steps"], params.get("scale", 1.0)
        _set_base_lr(optimizer, scale * params["d_model"] ** -0.5)
        return lr_scheduler.LambdaLR(optimizer, lambda t: _inverse_sqrt_factor(t, warmup))
    if name == "one_cycle":
        options = {key: value for key, value in params.items() if key != "max_lr"}
        options["pct_start"] = float(options.get("pct_start", 0.3))
        return lr_scheduler.OneCycleLR(optimizer, params["max_lr"], cycle_momentum=False, anneal_strategy="cos",
                                       **options)
    _set_base_lr(optimizer, base_lr)
    if name == "constant":
        return lr_scheduler.LambdaLR(optimizer, lambda t: 1.0)
    if name == "step":
        return lr_scheduler.MultiStepLR(optimizer, list(params["milestones"]), params.get("gamma", 0.1))
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, params["total_steps"], params.get("min_lr", 0.0))
    if name == "linear":
        return lr_scheduler.LinearLR(optimizer, 1.0, params.get("end_factor", 0.0), params["total_steps"])
    return lr_scheduler.CosineAnnealingWarmRestarts(optimizer, params["first_period"], params.get("period_mult", 1),
                                                    params.get("min_lr", 0.0))


def torch_scheduler(name: str, optimizer: torch.optim.Optimizer, **params) -> lr_scheduler.LRScheduler:
    """torch's counterpart of ``make_schedule(name, **params)``, driving ``optimizer``.

    constant: LambdaLR(1); step: MultiStepLR; cosine: CosineAnnealingLR; linear: LinearLR;
    inverse_sqrt: LambdaLR; cosine_restarts: CosineAnnealingWarmRestarts; one_cycle: OneCycleLR
    (cycle_momentum=False); with ``warmup_steps``: SequentialLR(LinearLR, the above, milestones=[w]).
    The optimizer's rate is replaced by the schedule's base rate. Call ``scheduler.step()`` after
    each ``optimizer.step()``.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
    schedule = make_schedule(name, **params)
    own_params, warmup_steps, start_factor = _split_warmup(name, params)
    if warmup_steps is None:
        return _torch_main_scheduler(name, optimizer, own_params)
    if start_factor == 0:
        raise ValueError("warmup_start_factor: torch's LinearLR needs a start factor > 0, got 0")
    _set_base_lr(optimizer, schedule.params["schedule"](0))  # the warmup climbs to the wrapped schedule's start
    warmup = lr_scheduler.LinearLR(optimizer, start_factor, 1.0, warmup_steps)
    main = _torch_main_scheduler(name, optimizer, own_params)
    return lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[warmup_steps])


class ScheduleLR(lr_scheduler.LRScheduler):
    """A torch scheduler that sets every parameter group's rate to ``schedule(t)``.

    ``schedule``: any function step -> rate (ours, from ``make_schedule``, or a lambda). Use it as
    any torch scheduler: ``optimizer.step()`` then ``scheduler.step()``. Every group gets the
    same rate (per-group scaling, as ``LambdaLR`` does, is left out to keep the rate readable).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not callable(schedule):
            raise TypeError(f"schedule: expected a function step -> rate, got {type(schedule).__name__}")
        self.schedule = schedule
        super().__init__(optimizer)

    def get_lr(self) -> list:
        return [self.schedule(self.last_epoch)] * len(self.optimizer.param_groups)


def _torch_values(scheduler: lr_scheduler.LRScheduler, optimizer, num_steps: int) -> np.ndarray:
    """The rates torch gives updates 0 .. num_steps − 1, in the order of a training loop."""
    values = []
    for _ in range(num_steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: changes nothing, but keeps torch's order (optimizer, then scheduler)
        scheduler.step()
    return np.array(values, dtype=np.float64)


def compare_with_torch(name: str, num_steps: int, **params) -> dict:
    """Run ``make_schedule(name, **params)`` and ``torch_scheduler`` side by side for ``num_steps``.

    Returns ``dict(max_abs, max_rel, values_lib, values_torch)``: the largest absolute difference,
    that difference relative to the largest rate of the run (a pointwise relative error would
    blow up where a schedule reaches 0), and both runs as arrays (num_steps,).

    torch's CosineAnnealingLR and LinearLR, stepped without an epoch, compute each rate from the
    previous one (a ratio of cosines, a ratio of linear factors), so round-off accumulates. Measured
    in float64 against the closed forms here, with ``base_lr`` 1, ``min_lr`` / ``end_factor`` 0 and
    ``total_steps`` = ``num_steps``, on the pinned CPU numerics (``lib.reproducible``): over 10⁴ steps
    a largest difference of 2.2e-16 (cosine) and 4.3e-14 (linear), over 10⁵ steps 2.2e-16 and 1.3e-13:
    far below anything training feels.
    """
    num_steps = check_int("num_steps", num_steps, minimum=1)
    schedule = make_schedule(name, **params)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    values_torch = _torch_values(torch_scheduler(name, optimizer, **params), optimizer, num_steps)
    values_lib = schedule_values(schedule, num_steps)
    max_abs = float(np.max(np.abs(values_lib - values_torch)))
    peak = float(np.max(np.abs(values_torch)))
    return dict(max_abs=max_abs, max_rel=max_abs / peak if peak > 0 else max_abs,
                values_lib=values_lib, values_torch=values_torch)


# ---------------------------------------------------------------------------------------
# The learning-rate range test (fastai's lr_find, after Smith 2017)
# ---------------------------------------------------------------------------------------

@dataclass
class RangeTest:
    """The result of ``lr_range_test``; every array has one entry per step taken, shape (steps,).

    ``lrs[t]``: the rate of update t; ``losses[t]``: the mini-batch loss just before update t
    (so it reflects the rates up to t − 1); ``smoothed``: their bias-corrected moving average;
    ``suggestion``: the rate where the smoothed loss fell fastest; ``min_loss_lr``: the rate at
    the smoothed loss's minimum; ``stopped_early``: the loss exploded before the last step.
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    stopped_early: bool
    suggestion: float
    min_loss_lr: float

    def plot(self, ax=None):
        """Loss against rate on a log axis, the suggestion and the minimum marked; returns the axes."""
        import matplotlib.pyplot as plt  # only for the figure: the test itself runs without matplotlib

        ax = ax if ax is not None else plt.gca()
        ax.plot(self.lrs, self.losses, color="0.7", lw=1, label="mini-batch loss")
        ax.plot(self.lrs, self.smoothed, color="C0", lw=2, label="smoothed loss")
        ax.axvline(self.suggestion, color="C2", ls="-", label=f"steepest descent: {self.suggestion:.2g}")
        ax.axvline(self.min_loss_lr, color="C3", ls="--", label=f"minimum of smoothed loss: {self.min_loss_lr:.2g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        ax.set_title("Learning-rate range test")
        ax.legend()
        return ax


def _smoothed(losses: list, smoothing: float) -> np.ndarray:
    """Exponential moving average m_t = (1 − s)·m_(t−1) + s·ℓ_t, m_(−1) = 0, divided by 1 − (1 − s)^(t+1)
    so that the first values are not pulled towards the zero it starts from."""
    average, smoothed = 0.0, []
    for t, loss in enumerate(losses):
        average = (1 - smoothing) * average + smoothing * loss
        smoothed.append(average / (1 - (1 - smoothing) ** (t + 1)))
    return np.array(smoothed)


def _steepest_descent(lrs: np.ndarray, smoothed: np.ndarray, smoothing: float) -> int:
    """Index of the most negative slope d(smoothed loss)/d(log lr), among the steps before the minimum.

    The first 1/smoothing steps are passed over when the minimum comes later: until then the
    average holds fewer losses than its memory spans, and its slope is mostly mini-batch noise.
    """
    lowest = int(np.argmin(smoothed))
    if lowest < 2:  # no descent to speak of (np.gradient also needs two points)
        return 0
    slopes = np.gradient(smoothed[: lowest + 1], np.log(lrs[: lowest + 1]))
    first = min(round(1 / smoothing), lowest - 1)
    return first + int(np.argmin(slopes[first:lowest]))


def lr_range_test(model: nn.Module, data: Splits, make_optimizer, min_lr: float = 1e-5, max_lr: float = 10.0,
                  num_steps: int = 100, batch_size: int = 64, smoothing: float = 0.05,
                  explode_factor: float = 4.0, seed: int = 0) -> RangeTest:
    """The learning-rate range test as fastai's ``lr_find`` runs it (Howard & Gugger 2020): train briefly
    while the rate grows exponentially from ``min_lr`` to ``max_lr`` (``exponential_range_lr``), and
    watch the loss. Smith (2017), who proposed the test, raised the rate linearly over several epochs
    and read the accuracy; the exponential sweep, reading the loss, stopping at the explosion and the
    two suggestions below are fastai's.

    Trains a copy of ``model`` (the caller's model is untouched) with cross-entropy on mini-batches
    of ``data``'s training split (``lib.data.TensorBatches``, ``seed``) for up to ``num_steps``
    updates; ``make_optimizer(parameters)`` builds the optimizer, whose every group's rate is set
    before each update. Stops early once the smoothed loss exceeds ``explode_factor`` times its best
    value so far, or the loss is NaN or infinite.

    The suggestion is the rate at the steepest descent of the smoothed loss: the most negative
    slope against log lr, among the steps before the smoothed loss's minimum (and after the first
    1/smoothing steps, whose average is still mostly mini-batch noise). A common alternative
    is the rate at the minimum divided by 10 (``min_loss_lr / 10``). Either is a starting point to
    be checked by a real training run, not an answer: the test's few steps see only the start of
    training.

    Where the marks fall is biased towards larger rates. The moving average lags the raw losses by
    about 1/smoothing − 1 steps (19 for 0.05), and over N steps one step multiplies the rate by
    (max_lr/min_lr)^(1/(N − 1)); so the lag is a factor of about (max_lr/min_lr)^(19/(N − 1)) in
    rate (2.7 for 10⁻³ to 30 in 200 steps), larger for shorter tests. Besides, ``losses[t]`` is
    measured before update t, whose rate is ``lrs[t]``: the loss at ``lrs[t]`` shows the effect of
    the rates up to ``lrs[t − 1]``, a one-step offset (5% in rate for 10⁻³ to 30 in 200 steps).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch nn.Module, got {type(model).__name__}")
    if not isinstance(data, Splits):
        raise TypeError(f"data: expected a lib.data.Splits, got {type(data).__name__}")
    if not callable(make_optimizer):
        raise TypeError(f"make_optimizer: expected a function parameters -> optimizer, got {type(make_optimizer).__name__}")
    exponential_range_lr(0, min_lr, max_lr, num_steps)  # checks min_lr, max_lr, num_steps
    smoothing = check_probability("smoothing", smoothing)
    if smoothing == 0:
        raise ValueError("smoothing: expected a weight in (0, 1] for the newest loss, got 0")
    explode_factor = check_positive("explode_factor", explode_factor)
    if explode_factor <= 1:
        raise ValueError(f"explode_factor: expected a factor > 1, got {explode_factor}")

    trial = copy.deepcopy(model).train()
    first = next(trial.parameters())
    x, y = to_tensors(data.x_train, data.y_train, first.device, first.dtype)
    batches = iter(TensorBatches(x, y, check_int("batch_size", batch_size, minimum=1), seed=seed))
    optimizer = make_optimizer(trial.parameters())
    lrs, losses, stopped_early = [], [], False
    for step in range(num_steps):
        lr = exponential_range_lr(step, min_lr, max_lr, num_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = next(batches)
        loss = nn.functional.cross_entropy(trial(inputs), targets)
        if not torch.isfinite(loss):
            stopped_early = True
            break
        lrs.append(lr)
        losses.append(loss.item())
        smoothed = _smoothed(losses, smoothing)
        if smoothed[-1] > explode_factor * smoothed.min():
            stopped_early = step < num_steps - 1
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    lrs, smoothed = np.array(lrs), _smoothed(losses, smoothing)
    return RangeTest(lrs=lrs, losses=np.array(losses), smoothed=smoothed, stopped_early=stopped_early,
                     suggestion=float(lrs[_steepest_descent(lrs, smoothed, smoothing)]),
                     min_loss_lr=float(lrs[np.argmin(smoothed)]))


# ---------------------------------------------------------------------------------------
# Gradient norms and a loss-spike guard
# ---------------------------------------------------------------------------------------

def global_grad_norm(model_or_parameters) -> float:
    """‖g‖ = √(Σ over every parameter of Σ g²): the L2 norm of all gradients taken as one vector,
    as ``torch.nn.utils.clip_grad_norm_`` computes it. Parameters without a gradient are skipped.

    ``model_or_parameters``: an ``nn.Module``, a tensor, or an iterable of tensors.
    """
    if isinstance(model_or_parameters, nn.Module):
        parameters = list(model_or_parameters.parameters())
    elif isinstance(model_or_parameters, torch.Tensor):
        parameters = [model_or_parameters]
    else:
        try:
            parameters = list(model_or_parameters)
        except TypeError:
            raise TypeError(f"model_or_parameters: expected a module, a tensor or an iterable of tensors, "
                            f"got {type(model_or_parameters).__name__}") from None
        if not all(isinstance(p, torch.Tensor) for p in parameters):
            raise TypeError("model_or_parameters: expected every item to be a tensor")
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    # the norm of the per-tensor norms, in the order clip_grad_norm_ takes them
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


@dataclass
class SpikeDetector:
    """Flags outliers in a stream of numbers (a per-batch loss, a gradient norm) as they arrive.

    A value is flagged when it lies above median + ``threshold`` · 1.4826 · MAD of the previous
    ``window`` unflagged values (MAD: the median absolute deviation from the median; × 1.4826 it
    estimates the standard deviation of normal noise). NaN and infinity are always flagged; no
    finite value is flagged among the first ``warmup`` ones, and those enter the window unjudged
    (``warmup`` must be at least 1, a ValueError naming it otherwise: with an empty window there is
    no baseline, so the first value is never judged; nor is any finite value while the window is
    still empty, as after a warmup of NaNs: it becomes the first of the baseline). Flagged values
    never enter the window, so a spike does not raise the baseline that the next value is judged
    against.

    The price of that rule: after a legitimate level shift upwards (a warm restart, the end of a
    warmup, a raised rate) every later value lies above the old window's limit, is flagged, and never
    enters the window, so every update is flagged from then on. A long stream of consecutive flags
    therefore means one of two things, the run did not recover or its level moved for a reason:
    look at the values; start a new detector after a deliberate change of level.

    Why median and MAD rather than mean and standard deviation: one spike of size S moves a mean by
    S / window and inflates a standard deviation by about S / √window, enough for a large spike to
    hide itself and its neighbours; the median and the MAD barely move. A window of identical
    values has MAD 0, so there anything above them is flagged.
    ``flagged`` lists the indices (0, 1, ...) of the flagged values.
    """

    window: int = 50
    threshold: float = 6.0
    warmup: int = 20
    flagged: list = field(default_factory=list, init=False)

    def __post_init__(self):
        check_int("window", self.window, minimum=2)
        check_positive("threshold", self.threshold)
        check_int("warmup", self.warmup, minimum=1)
        self._recent, self._count = [], 0

    def update(self, value) -> bool:
        """Judge the next value; True if it is a spike (its index is then added to ``flagged``)."""
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"value: expected a real number, got {type(value).__name__}")
        index, self._count = self._count, self._count + 1
        # Judged only with a baseline: after the warmup, and with at least one value in the window
        # (non-finite values never enter it, so a warmup of NaNs leaves it empty).
        judged = index >= self.warmup and len(self._recent) > 0
        spike = not math.isfinite(value) or (judged and value > self._limit())
        if spike:
            self.flagged.append(index)
        else:
            self._recent = (self._recent + [float(value)])[-self.window:]
        return spike

    def _limit(self) -> float:
        recent = np.array(self._recent)
        median = np.median(recent)
        return median + self.threshold * 1.4826 * np.median(np.abs(recent - median))
