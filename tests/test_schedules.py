"""The schedules module: every schedule against its torch scheduler value for value over a whole
run, ScheduleLR driving a torch optimizer as torch's own scheduler does, the range test on a small
linear classifier, the gradient norm against clip_grad_norm_, the spike detector on a noisy
decreasing series, and bad arguments."""
import math
import warnings

import numpy as np
import pytest
import torch

from torch import nn

from lib.data import Splits
from lib.schedules import (
    SCHEDULES, ScheduleLR, SpikeDetector, compare_with_torch, constant_lr, cosine_lr, cosine_restarts_lr,
    exponential_range_lr, global_grad_norm, inverse_sqrt_lr, linear_decay_lr, lr_range_test, make_schedule,
    one_cycle_lr, schedule_values, step_lr, torch_scheduler, warmup_lr,
)

# --------------------------------------------------------------------------------------
# lib = torch, value for value
# --------------------------------------------------------------------------------------

WHOLE_RUNS = [
    ("constant", 50, dict(base_lr=0.1)),
    ("step", 100, dict(base_lr=0.1, milestones=[30, 60, 90])),  # ResNet's per-epoch recipe
    ("step", 40, dict(base_lr=0.5, milestones=[1, 7, 8], gamma=0.5)),
    ("cosine", 101, dict(base_lr=0.1, total_steps=100)),
    ("cosine", 201, dict(base_lr=0.3, total_steps=200, min_lr=0.01)),
    ("linear", 120, dict(base_lr=0.1, total_steps=100)),
    ("linear", 150, dict(base_lr=0.1, total_steps=100, end_factor=0.2)),
    ("inverse_sqrt", 500, dict(d_model=512, warmup_steps=100)),
    ("inverse_sqrt", 300, dict(d_model=64, warmup_steps=40, scale=2.0)),
    ("cosine_restarts", 300, dict(base_lr=0.1, first_period=25)),
    ("cosine_restarts", 300, dict(base_lr=0.1, first_period=10, period_mult=2, min_lr=1e-3)),
    ("cosine_restarts", 200, dict(base_lr=0.1, first_period=3, period_mult=3)),
    ("one_cycle", 100, dict(max_lr=1.0, total_steps=100)),
    ("one_cycle", 37, dict(max_lr=0.5, total_steps=37, pct_start=0.3)),
    ("one_cycle", 1000, dict(max_lr=0.5, total_steps=1000, pct_start=0.25, three_phase=True)),
    ("one_cycle", 90, dict(max_lr=0.4, total_steps=90, div_factor=10.0, final_div_factor=100.0, three_phase=True)),
    ("cosine", 100, dict(base_lr=0.1, total_steps=100, warmup_steps=10, warmup_start_factor=0.1)),
    ("cosine", 60, dict(base_lr=0.1, total_steps=60, min_lr=0.001, warmup_steps=1, warmup_start_factor=1e-3)),
    ("step", 100, dict(base_lr=0.1, milestones=[30, 60], warmup_steps=5, warmup_start_factor=1e-3)),
    ("linear", 100, dict(base_lr=0.1, total_steps=100, warmup_steps=10, warmup_start_factor=0.1)),
    ("constant", 30, dict(base_lr=0.1, warmup_steps=10, warmup_start_factor=0.5)),
    ("cosine_restarts", 80, dict(base_lr=0.1, first_period=10, period_mult=2, warmup_steps=5, warmup_start_factor=0.2)),
    ("one_cycle", 100, dict(max_lr=0.1, total_steps=100, warmup_steps=10, warmup_start_factor=0.1)),
]


@pytest.mark.parametrize("name, num_steps, params", WHOLE_RUNS, ids=lambda v: str(v) if isinstance(v, str) else "")
def test_schedule_equals_torch_over_a_whole_run(name, num_steps, params):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when a scheduler is stepped in the wrong order
        result = compare_with_torch(name, num_steps, **params)
    assert result["values_lib"].shape == result["values_torch"].shape == (num_steps,)
    assert result["max_rel"] <= 1e-12, result["max_rel"]


def test_every_named_schedule_is_compared_with_torch():
    assert {name for name, _, _ in WHOLE_RUNS} == set(SCHEDULES)


@pytest.mark.parametrize("name, bound", [("cosine", 1e-14), ("linear", 1e-13)])
def test_torch_recursive_form_drifts_little_over_a_long_run(name, bound):
    """CosineAnnealingLR and LinearLR compute lr_t from lr_(t−1) when stepped without an epoch, so
    round-off accumulates; over 10⁴ steps we measured 3.3e-15 (cosine) and 4.9e-14 (linear) relative
    to the peak rate, over 10⁵ steps 1.8e-14 and 3.8e-13."""
    result = compare_with_torch(name, 10_001, base_lr=0.1, total_steps=10_000)
    assert result["max_rel"] <= bound


def test_torch_cosine_climbs_back_past_its_period_while_ours_stays_at_min_lr():
    result = compare_with_torch("cosine", 201, base_lr=0.1, total_steps=100)
    assert result["values_lib"][100:].max() == 0.0
    assert result["values_torch"][150] == pytest.approx(0.05) and result["values_torch"][200] == pytest.approx(0.1)


def test_sequential_lr_hands_over_without_an_off_by_one():
    """At the milestone w torch's SequentialLR restarts the second scheduler at its step 0, so the
    warmup's last rate is f(0)·(a + (1 − a)(w − 1)/w) and update w gets f(0) exactly."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = torch_scheduler("cosine", optimizer, base_lr=0.2, total_steps=30, warmup_steps=4,
                                warmup_start_factor=0.5)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.2 * (0.5 + 0.5 * t / 4) for t in range(4)] + [0.2, cosine_lr(1, 0.2, 26)]
    np.testing.assert_allclose(rates, expected, rtol=1e-14)


# --------------------------------------------------------------------------------------
# ScheduleLR: our function driving a torch optimizer
# --------------------------------------------------------------------------------------

def sgd_trajectory(make_scheduler, lr, steps=60):
    """Parameters after SGD with momentum on a fixed quadratic, the rate set by ``make_scheduler``."""
    torch.manual_seed(0)
    weight = torch.randn(5, dtype=torch.float64, requires_grad=True)
    target = torch.randn(5, dtype=torch.float64)
    optimizer = torch.optim.SGD([weight], lr=lr, momentum=0.9)
    scheduler = make_scheduler(optimizer)
    for _ in range(steps):
        optimizer.zero_grad()
        ((weight - target) ** 2).sum().backward()
        optimizer.step()
        scheduler.step()
    return weight.detach().numpy()


def test_schedule_lr_drives_sgd_as_torch_cosine_does():
    params = dict(base_lr=0.05, total_steps=60, min_lr=0.001)
    ours = sgd_trajectory(lambda opt: ScheduleLR(opt, make_schedule("cosine", **params)), lr=1.0)
    theirs = sgd_trajectory(lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, 60, 0.001), lr=0.05)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


def test_schedule_lr_sets_every_group_and_follows_the_step_count():
    groups = [{"params": [torch.zeros(1, requires_grad=True)]}, {"params": [torch.zeros(2, requires_grad=True)]}]
    optimizer = torch.optim.SGD(groups, lr=1.0)
    scheduler = ScheduleLR(optimizer, lambda t: 1.0 / (t + 1))
    assert [g["lr"] for g in optimizer.param_groups] == [1.0, 1.0]
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == [0.5, 0.5] == scheduler.get_last_lr()


# --------------------------------------------------------------------------------------
# The formulas at points worked by hand
# --------------------------------------------------------------------------------------

def test_formulas_at_hand_worked_points():
    assert step_lr(29, 0.1, [30, 60, 90]) == 0.1
    assert step_lr(30, 0.1, [30, 60, 90]) == pytest.approx(0.01)
    assert step_lr(95, 0.1, [30, 60, 90]) == pytest.approx(1e-4)
    assert cosine_lr(50, 1.0, 100) == pytest.approx(0.5)
    assert cosine_lr(100, 1.0, 100, min_lr=0.1) == cosine_lr(500, 1.0, 100, min_lr=0.1) == pytest.approx(0.1)
    assert linear_decay_lr(25, 1.0, 100) == 0.75 and linear_decay_lr(200, 1.0, 100, end_factor=0.5) == 0.5
    peak = inverse_sqrt_lr(99, 512, 100)  # s = 100 = w: the two branches meet
    assert peak == pytest.approx((512 * 100) ** -0.5) and peak == max(inverse_sqrt_lr(t, 512, 100) for t in range(300))
    assert warmup_lr(0, lambda t: 0.4, 10) == 0.0 and warmup_lr(5, lambda t: 0.4, 10) == pytest.approx(0.2)
    assert warmup_lr(12, lambda t: 0.4 - t / 100, 10) == pytest.approx(0.38)
    assert cosine_restarts_lr(30, 1.0, 10, period_mult=2) == 1.0  # restarts at 10 and 30
    assert cosine_restarts_lr(50, 1.0, 10, period_mult=2) == pytest.approx(0.5)  # halfway through the period of 40
    assert one_cycle_lr(0, 1.0, 100) == pytest.approx(1 / 25) and one_cycle_lr(29, 1.0, 100) == 1.0
    assert one_cycle_lr(99, 1.0, 100) == one_cycle_lr(150, 1.0, 100) == pytest.approx(1 / 25 / 1e4)
    assert constant_lr(7, 0.3) == 0.3


def test_exponential_range_spreads_evenly_on_a_log_axis():
    rates = schedule_values(lambda t: exponential_range_lr(t, 1e-5, 10.0, 61), 61)
    assert rates[0] == pytest.approx(1e-5) and rates[-1] == pytest.approx(10.0)
    np.testing.assert_allclose(np.diff(np.log10(rates)), 0.1, rtol=1e-10)


def test_make_schedule_reads_as_the_call_and_counts_warmup_in_the_run():
    assert repr(make_schedule("cosine", base_lr=0.1, total_steps=1000)) == "cosine_lr(base_lr=0.1, total_steps=1000)"
    schedule = make_schedule("cosine", base_lr=0.1, total_steps=100, warmup_steps=10)
    assert repr(schedule) == ("warmup_lr(schedule=cosine_lr(base_lr=0.1, total_steps=90), warmup_steps=10, "
                              "start_factor=0.0)")
    assert schedule(100) == 0.0 and schedule(99) > 0.0  # the whole run is total_steps long
    assert make_schedule("inverse_sqrt", d_model=16, warmup_steps=4)(3) == inverse_sqrt_lr(3, 16, 4)
    assert schedule_values(schedule, 5).shape == (5,)


# --------------------------------------------------------------------------------------
# The range test
# --------------------------------------------------------------------------------------

def blobs(n=400, features=8, classes=3, seed=0):
    """Gaussian blobs around random class centres: a problem a linear classifier learns in a few steps."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(classes, features))
    y = rng.integers(classes, size=n)
    x = centres[y] + rng.normal(size=(n, features))
    return Splits(x, y, x[:50], y[:50], x[:50], y[:50])


def linear_model():
    torch.manual_seed(0)
    return nn.Linear(8, 3)


def sgd(parameters):
    return torch.optim.SGD(parameters, lr=0.0)


def test_range_test_stops_once_the_loss_explodes_and_leaves_the_model_alone():
    model = linear_model()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    result = lr_range_test(model, blobs(), sgd, min_lr=1e-4, max_lr=1e4, num_steps=80, batch_size=32)
    assert result.stopped_early and len(result.lrs) < 80
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert result.lrs.shape == result.losses.shape == result.smoothed.shape
    np.testing.assert_allclose(result.lrs, [exponential_range_lr(t, 1e-4, 1e4, 80) for t in range(len(result.lrs))])
    assert 1e-4 <= result.suggestion <= result.min_loss_lr <= 1e4
    assert result.smoothed.min() < 0.5 * result.smoothed[0]  # the loss did fall before it exploded


def test_range_test_runs_to_the_end_when_the_rates_stay_small():
    result = lr_range_test(linear_model(), blobs(), sgd, min_lr=1e-5, max_lr=1e-3, num_steps=30, batch_size=32)
    assert not result.stopped_early and len(result.lrs) == 30
    assert result.lrs[-1] == pytest.approx(1e-3)


def test_range_test_smoothing_is_bias_corrected():
    result = lr_range_test(linear_model(), blobs(), sgd, min_lr=1e-6, max_lr=1e-5, num_steps=3, smoothing=0.5)
    first, second = result.losses[:2]
    assert result.smoothed[0] == pytest.approx(first)  # not pulled towards the average's zero start
    assert result.smoothed[1] == pytest.approx((0.25 * first + 0.5 * second) / 0.75)


def test_range_test_plot_marks_the_suggestion():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = lr_range_test(linear_model(), blobs(), sgd, min_lr=1e-4, max_lr=1e4, num_steps=40, batch_size=32)
    fig, ax = plt.subplots()
    assert result.plot(ax) is ax and ax.get_xscale() == "log"
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel() and len(ax.get_legend().get_texts()) == 4
    plt.close(fig)


# --------------------------------------------------------------------------------------
# Gradient norms and spikes
# --------------------------------------------------------------------------------------

def test_global_grad_norm_equals_clip_grad_norm():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    model(torch.randn(7, 6, dtype=torch.float64)).pow(2).sum().backward()
    expected = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=math.inf).item()
    assert global_grad_norm(model) == pytest.approx(expected, rel=1e-15)
    assert global_grad_norm(list(model.parameters())) == global_grad_norm(model)
    assert global_grad_norm(nn.Linear(2, 2)) == 0.0  # no gradients yet


def noisy_decreasing_series(spikes, n=500, seed=0):
    rng = np.random.default_rng(seed)
    series = 2 * np.exp(-np.arange(n) / 400) + 0.3 + 0.03 * rng.normal(size=n)
    series[list(spikes)] += 1.0
    return series


def test_spike_detector_flags_exactly_the_injected_spikes():
    spikes = [100, 250, 251, 400]  # two in a row: the first must not raise the baseline for the second
    detector = SpikeDetector()
    flags = [detector.update(value) for value in noisy_decreasing_series(spikes)]
    assert detector.flagged == spikes == [i for i, flag in enumerate(flags) if flag]


def test_spike_detector_always_flags_non_finite_values_and_waits_out_its_warmup():
    detector = SpikeDetector(window=10, warmup=5)
    values = [1.0, 50.0, math.nan, 1.1, 0.9, 1.0, torch.tensor(math.inf), 1.05, 50.0]
    assert [detector.update(v) for v in values] == [False, False, True, False, False, False, True, False, True]


def test_spike_detector_never_flags_the_first_finite_value_it_has_no_baseline_for():
    detector = SpikeDetector(window=5, warmup=1)
    assert [detector.update(v) for v in [1e6, 1e6, 5e6]] == [False, False, True]


def test_spike_detector_judges_nothing_against_an_empty_window_after_a_warmup_of_nans():
    detector = SpikeDetector(window=5, warmup=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no median of an empty window
        assert [detector.update(v) for v in [math.nan, math.inf, 1000.0, 1000.0, 1e6]] == [True, True, False, False, True]
    assert detector.flagged == [0, 1, 4]


def test_spike_detector_flags_every_value_after_a_level_shift_as_its_docstring_warns():
    # a legitimate jump (a warm restart) never enters the window, so the old level stays the baseline
    detector = SpikeDetector(window=10, warmup=10)
    level = np.r_[1.0 + 0.01 * np.sin(np.arange(30)), 2.0 + 0.01 * np.sin(np.arange(30))]
    flags = [detector.update(value) for value in level]
    assert not any(flags[:30]) and all(flags[30:])


# --------------------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------------------

BAD_CALLS = [
    (lambda: cosine_lr(-1, 0.1, 10), ValueError, "step"),
    (lambda: cosine_lr(1.0, 0.1, 10), TypeError, "step"),
    (lambda: constant_lr(0, -0.1), ValueError, "base_lr"),
    (lambda: constant_lr(0, math.nan), ValueError, "base_lr"),
    (lambda: constant_lr(0, math.inf), ValueError, "base_lr"),
    (lambda: cosine_lr(0, 0.1, 10, min_lr=0.2), ValueError, "min_lr"),
    (lambda: cosine_lr(0, 0.1, 10, min_lr=-0.01), ValueError, "min_lr"),
    (lambda: cosine_lr(0, 0.1, 0), ValueError, "total_steps"),
    (lambda: linear_decay_lr(0, 0.1, -5), ValueError, "total_steps"),
    (lambda: linear_decay_lr(0, 0.1, 10, end_factor=1.5), ValueError, "end_factor"),
    (lambda: step_lr(0, 0.1, [30, 30]), ValueError, "milestones"),
    (lambda: step_lr(0, 0.1, [60, 30]), ValueError, "milestones"),
    (lambda: step_lr(0, 0.1, [-3, 30]), ValueError, "milestones[0]"),
    (lambda: step_lr(0, 0.1, 30), TypeError, "milestones"),
    (lambda: step_lr(0, 0.1, [30], gamma=0.0), ValueError, "gamma"),
    (lambda: step_lr(0, 0.1, [30], gamma=1.5), ValueError, "gamma"),
    (lambda: inverse_sqrt_lr(0, 0, 100), ValueError, "d_model"),
    (lambda: inverse_sqrt_lr(0, 512, 0), ValueError, "warmup_steps"),
    (lambda: inverse_sqrt_lr(0, 512, 10, scale=0.0), ValueError, "scale"),
    (lambda: warmup_lr(0, 0.1, 10), TypeError, "schedule"),
    (lambda: warmup_lr(0, lambda t: 0.1, 0), ValueError, "warmup_steps"),
    (lambda: warmup_lr(0, lambda t: 0.1, 10, start_factor=1.5), ValueError, "start_factor"),
    (lambda: cosine_restarts_lr(0, 0.1, 0), ValueError, "first_period"),
    (lambda: cosine_restarts_lr(0, 0.1, 10, period_mult=0), ValueError, "period_mult"),
    (lambda: cosine_restarts_lr(0, 0.1, 10, period_mult=1.5), TypeError, "period_mult"),
    (lambda: cosine_restarts_lr(0, 0.1, 10, min_lr=1.0), ValueError, "min_lr"),
    (lambda: one_cycle_lr(0, 0.0, 100), ValueError, "max_lr"),
    (lambda: one_cycle_lr(0, 1.0, 100, pct_start=0.0), ValueError, "pct_start"),
    (lambda: one_cycle_lr(0, 1.0, 100, pct_start=1.0), ValueError, "pct_start"),
    (lambda: one_cycle_lr(0, 1.0, 100, pct_start=0.6, three_phase=True), ValueError, "pct_start"),
    (lambda: one_cycle_lr(0, 1.0, 100, div_factor=0.0), ValueError, "div_factor"),
    (lambda: one_cycle_lr(0, 1.0, 100, final_div_factor=-1.0), ValueError, "final_div_factor"),
    (lambda: exponential_range_lr(0, 0.0, 1.0, 10), ValueError, "min_lr"),
    (lambda: exponential_range_lr(0, 1.0, 0.5, 10), ValueError, "max_lr"),
    (lambda: exponential_range_lr(0, 1e-3, 1.0, 1), ValueError, "num_steps"),
    (lambda: make_schedule("cosine_annealing", base_lr=0.1), ValueError, "name"),
    (lambda: make_schedule("cosine", base_lr=0.1, total_steps=100, warmup_steps=100), ValueError, "warmup_steps"),
    (lambda: make_schedule("cosine", base_lr=0.1, total_steps=100, warmup_start_factor=0.1), ValueError,
     "warmup_start_factor"),
    (lambda: make_schedule("cosine", base_lr=0.1, total_steps=100, warmup_steps=5, warmup_start_factor=2.0),
     ValueError, "warmup_start_factor"),
    (lambda: make_schedule("cosine", base_lr=0.1, total_steps=100, gamma=0.1), TypeError, "params"),
    (lambda: make_schedule("cosine", base_lr=-0.1, total_steps=100), ValueError, "base_lr"),  # checked at creation
    (lambda: schedule_values("cosine", 10), TypeError, "schedule"),
    (lambda: schedule_values(lambda t: 0.1, 0), ValueError, "num_steps"),
    (lambda: torch_scheduler("cosine", "sgd", base_lr=0.1, total_steps=10), TypeError, "optimizer"),
    (lambda: torch_scheduler("cosine", torch.optim.SGD([torch.zeros(1)], lr=1.0), base_lr=0.1, total_steps=10,
                             warmup_steps=2), ValueError, "warmup_start_factor"),
    (lambda: ScheduleLR(torch.optim.SGD([torch.zeros(1)], lr=1.0), 0.1), TypeError, "schedule"),
    (lambda: compare_with_torch("cosine", 0, base_lr=0.1, total_steps=10), ValueError, "num_steps"),
    (lambda: lr_range_test("model", blobs(), sgd), TypeError, "model"),
    (lambda: lr_range_test(linear_model(), (1, 2), sgd), TypeError, "data"),
    (lambda: lr_range_test(linear_model(), blobs(), "sgd"), TypeError, "make_optimizer"),
    (lambda: lr_range_test(linear_model(), blobs(), sgd, min_lr=0.0), ValueError, "min_lr"),
    (lambda: lr_range_test(linear_model(), blobs(), sgd, min_lr=1.0, max_lr=0.1), ValueError, "max_lr"),
    (lambda: lr_range_test(linear_model(), blobs(), sgd, num_steps=1), ValueError, "num_steps"),
    (lambda: lr_range_test(linear_model(), blobs(), sgd, batch_size=0), ValueError, "batch_size"),
    (lambda: lr_range_test(linear_model(), blobs(), sgd, smoothing=0.0), ValueError, "smoothing"),
    (lambda: lr_range_test(linear_model(), blobs(), sgd, smoothing=1.5), ValueError, "smoothing"),
    (lambda: lr_range_test(linear_model(), blobs(), sgd, explode_factor=1.0), ValueError, "explode_factor"),
    (lambda: global_grad_norm(3.0), TypeError, "model_or_parameters"),
    (lambda: global_grad_norm([1.0, 2.0]), TypeError, "model_or_parameters"),
    (lambda: SpikeDetector(window=1), ValueError, "window"),
    (lambda: SpikeDetector(threshold=0.0), ValueError, "threshold"),
    (lambda: SpikeDetector(warmup=0), ValueError, "warmup"),
    (lambda: SpikeDetector().update("1.0"), TypeError, "value"),
]


@pytest.mark.parametrize("call, error, argument", BAD_CALLS, ids=[c[2] for c in BAD_CALLS])
def test_bad_arguments_raise_naming_the_argument(call, error, argument):
    with pytest.raises(error, match=f"^{argument.replace('[', '.').replace(']', '.')}"):
        call()
