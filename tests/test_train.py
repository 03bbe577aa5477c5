import copy

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

matplotlib.use("Agg")

from lib.data import Splits, TensorBatches, to_tensors  # noqa: E402
from lib.device import get_device, set_seed  # noqa: E402
from lib.initialization import ActivationRecorder  # noqa: E402
from lib.models import mlp  # noqa: E402
from lib.normalization import BatchNorm, LayerNorm  # noqa: E402
from lib.plots import plot_learning_curves, plot_mean_band  # noqa: E402
import lib.train  # noqa: E402
from lib.train import (  # noqa: E402
    EarlyStopping, History, SeedwiseSGD, StackedModels, accuracy_on_test, compare_over_seeds, evaluate,
    final_over_seeds, format_mean_spread, load_checkpoint, mean_spread, metric_over_seeds, save_checkpoint, train,
    train_seeds,
)


def blobs(n=300, seed=0):
    """Three well-separated Gaussian blobs in 4-D: any working loop learns them quickly."""
    generator = np.random.default_rng(seed)
    centers = generator.normal(0, 4, size=(3, 4))
    y = generator.integers(0, 3, size=n)
    x = centers[y] + generator.normal(size=(n, 4))
    return Splits(x[:200], y[:200], x[200:250], y[200:250], x[250:], y[250:])


def run(seed=0, steps=150, model=None, lr=0.1, **kw):
    set_seed(seed)
    model = model or mlp([4, 16, 3], nn.ReLU, BatchNorm)
    history = train(model, blobs(), torch.optim.SGD(model.parameters(), lr=lr), steps=steps, batch_size=20,
                    eval_every=50, progress=False, **kw)
    return model, history


def test_training_learns_and_records_history():
    model, history = run()
    assert history.steps == [0, 50, 100, 150]
    assert len(history.val_acc) == len(history.train_loss) == 4
    assert history.val_acc[0] < 0.7 and history.final() > 0.9
    assert accuracy_on_test(model, blobs()) > 0.9
    assert model.training  # handed back in training mode


def test_training_is_deterministic_with_a_seed():
    _, first = run(seed=3)
    _, second = run(seed=3)
    assert first.val_loss == second.val_loss and first.train_loss == second.train_loss


def test_record_runs_in_eval_mode_and_leaves_running_stats_alone():
    seen = []

    def record(model):
        seen.append(model.training)
        stats = model[1].running_mean.clone()
        model(torch.randn(10, 4) * 100)
        assert torch.equal(stats, model[1].running_mean)
        return {"norm": float(model[0].weight.norm())}

    _, history = run(record=record)
    assert seen == [False] * 4 and len(history.extra["norm"]) == 4


def test_epochs_translate_to_steps():
    set_seed(0)
    model = mlp([4, 8, 3])
    history = train(model, blobs(), torch.optim.SGD(model.parameters(), lr=0.1), epochs=2, batch_size=20,
                    eval_every=5, progress=False)
    assert history.steps[-1] == 2 * (200 // 20)


def test_divergence_stops_training():
    _, history = run(model=mlp([4, 16, 3]), lr=1e6, steps=150)
    assert history.diverged and history.steps[-1] < 150
    assert 0 < len(history.step_loss) < 150 and np.isfinite(history.step_loss).all()  # the updates done


def test_evaluate_restores_the_mode():
    model = mlp([4, 8, 3], norm=BatchNorm).train()
    evaluate(model, torch.randn(10, 4), torch.zeros(10, dtype=torch.int64))
    assert model.training
    model.eval()
    evaluate(model, torch.randn(10, 4), torch.zeros(10, dtype=torch.int64))
    assert not model.training


def test_first_step_reaching():
    _, history = run()
    assert history.first_step_reaching("val_acc", 0.0) == 0
    assert history.first_step_reaching("val_acc", 1.01) is None


def test_get_device_prefers_cuda_only_when_present():
    assert get_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert get_device("cpu").type == "cpu"


@pytest.mark.parametrize("call,error,match", [
    (lambda: train(mlp([4, 3]), blobs(), None, progress=False), ValueError, r"steps, epochs: give exactly one"),
    (lambda: train(mlp([4, 3]), blobs(), None, steps=10, epochs=1, progress=False), ValueError, r"steps, epochs"),
    (lambda: train(mlp([4, 3]), blobs(), None, steps=0, progress=False), ValueError, r"steps: expected an integer >= 1"),
    (lambda: train(mlp([4, 3]), blobs(), None, steps=5, batch_size=0, progress=False), ValueError, r"batch_size"),
    (lambda: train(mlp([4, 3]), blobs(), None, steps=5, eval_every=0, progress=False), ValueError, r"eval_every"),
    (lambda: mlp([4]), ValueError, r"sizes: expected at least"),
    (lambda: mlp([4, 0, 3]), ValueError, r"sizes\[1\]: expected an integer >= 1"),
    (lambda: mlp([4, 8, 3], norm="batch"), TypeError, r"norm: expected a function of the layer width"),
    (lambda: mlp([4, 8, 3], norm=lambda width: None), TypeError, r"norm: expected a function that returns an nn.Module"),
    (lambda: set_seed(-1), ValueError, r"seed: expected an integer >= 0"),
    (lambda: set_seed(1.5), TypeError, r"seed: expected an integer"),
    (lambda: get_device("tpu"), ValueError, r"prefer: expected None, 'cpu' or 'cuda'"),
])
def test_training_rejects_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def linear_biases(model):
    return [m.bias is not None for m in model if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("norm", [BatchNorm, nn.BatchNorm1d, lambda width: BatchNorm(width, momentum=0.2)],
                         ids=["lib BatchNorm", "nn.BatchNorm1d", "a factory"])
def test_mlp_drops_the_bias_before_batch_norm(norm):
    assert linear_biases(mlp([4, 8, 8, 3], norm=norm)) == [False, False, True]
    assert linear_biases(mlp([4, 8, 8, 3])) == [True, True, True]


@pytest.mark.parametrize("norm", [LayerNorm, nn.LayerNorm, lambda width: nn.GroupNorm(2, width)],
                         ids=["lib LayerNorm", "nn.LayerNorm", "nn.GroupNorm"])
def test_mlp_keeps_the_bias_before_a_norm_over_the_features(norm):
    assert linear_biases(mlp([4, 8, 8, 3], norm=norm)) == [True, True, True]


def test_a_bias_changes_layer_norm_but_not_batch_norm():
    # Why mlp keeps the bias only before layer norm: layer norm subtracts the mean over the
    # features, which removes only the bias's average, not its pattern across features.
    set_seed(0)
    h, bias = torch.randn(16, 8), torch.randn(8)
    assert torch.allclose(BatchNorm(8)(h + bias), BatchNorm(8)(h), atol=1e-5)
    assert (LayerNorm(8)(h + bias) - LayerNorm(8)(h)).abs().max() > 0.5


def test_mlp_with_batch_norm_draws_the_same_weights_as_its_layers_alone():
    set_seed(0)
    model = mlp([4, 8, 3], norm=BatchNorm)
    set_seed(0)
    first, last = nn.Linear(4, 8, bias=False), nn.Linear(8, 3)
    assert torch.equal(model[0].weight, first.weight) and torch.equal(model[3].weight, last.weight)


def test_tune_for_small_models_uses_one_cpu_thread():
    from lib.device import tune_for_small_models
    before = torch.get_num_threads()
    try:
        tune_for_small_models(torch.device("cpu"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(TypeError, match="device: expected a torch.device"):
        tune_for_small_models("cpu")


# ---------------------------------------------------------------------------------------
# train_seeds: k seeds as one batched model
# ---------------------------------------------------------------------------------------

SEEDS = [3, 0, 7]  # not sorted: results must come back in the order asked for
NORMS = {"no norm": None, "nn.BatchNorm1d": nn.BatchNorm1d, "lib BatchNorm": BatchNorm}
OPTIMIZERS = {
    "SGD momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    "Adam weight decay": lambda params: torch.optim.Adam(params, lr=0.01, weight_decay=1e-3),
}
FIT = dict(steps=100, batch_size=20, eval_every=40, progress=False)


def float64_mlp(norm):
    return lambda: mlp([4, 16, 16, 3], nn.Tanh, norm).double()


def separate_run(build_model, make_optimizer, seed, device=None, **kw):
    set_seed(seed)
    model = build_model()
    history = train(model, blobs(), make_optimizer(list(model.parameters())), seed=seed, device=device, **FIT, **kw)
    return model, history


def assert_close(actual, expected):
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)


def assert_same_run(model, history, ref_model, ref_history):
    assert history.steps == ref_history.steps and history.diverged == ref_history.diverged
    for metric in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "step_loss", "step_lr"):
        assert_close(getattr(history, metric), getattr(ref_history, metric))
    for key in ref_history.extra:
        assert_close(history.extra[key], ref_history.extra[key])
    state, ref_state = model.state_dict(), ref_model.state_dict()  # parameters and running statistics
    assert state.keys() == ref_state.keys()
    for name in ref_state:
        assert_close(state[name].cpu(), ref_state[name].cpu())


@pytest.mark.parametrize("norm", NORMS.values(), ids=NORMS.keys())
@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_each_seed_matches_a_separate_run(norm, make_optimizer):
    def record(model):
        return {"weight_norm": float(model[0].weight.norm())}

    models, histories = train_seeds(float64_mlp(norm), blobs(), make_optimizer, SEEDS, record=record, **FIT)
    for seed, model, history in zip(SEEDS, models, histories):
        assert_same_run(model, history, *separate_run(float64_mlp(norm), make_optimizer, seed, record=record))
    assert histories[0].final() > 0.9 and models[0].training


@pytest.mark.parametrize("norm", [nn.BatchNorm1d, BatchNorm], ids=["nn.BatchNorm1d", "lib BatchNorm"])
def test_running_statistics_are_each_models_own(norm):
    models, _ = train_seeds(float64_mlp(norm), blobs(), OPTIMIZERS["SGD momentum"], SEEDS, **FIT)
    means = [model[1].running_mean for model in models]
    assert not torch.equal(means[0], means[1]) and not torch.equal(means[0], torch.zeros_like(means[0]))
    for seed, model in zip(SEEDS, models):
        ref_model, _ = separate_run(float64_mlp(norm), OPTIMIZERS["SGD momentum"], seed)
        assert_close(model[1].running_mean, ref_model[1].running_mean)
        assert_close(model[1].running_var, ref_model[1].running_var)


def test_record_gets_each_real_model_in_eval_mode():
    seen = []

    def record(model):
        seen.append((model, model.training, torch.is_grad_enabled()))
        stats = model[1].running_mean.clone()
        with ActivationRecorder(model, (nn.ReLU,)) as recorder:  # forward hooks work on the real module
            model(torch.randn(10, 4) * 100)
        assert torch.equal(stats, model[1].running_mean)
        return {"activation_mean": float(recorder.activations[0].mean())}

    models, histories = train_seeds(lambda: mlp([4, 16, 3], nn.ReLU, BatchNorm), blobs(),
                                    lambda params: torch.optim.SGD(params, lr=0.1), [0, 1], record=record, **FIT)
    assert [history.steps for history in histories] == [[0, 40, 80, 100]] * 2
    assert [entry[1:] for entry in seen] == [(False, False)] * 8
    assert [entry[0] for entry in seen[:2]] == models  # both seeds' own modules, in seed order
    assert all(len(history.extra["activation_mean"]) == 4 for history in histories)


def test_dropout_trains_with_different_masks_per_model():
    def build():
        return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3))

    models, histories = train_seeds(build, blobs(), lambda params: torch.optim.SGD(params, lr=0.1), [0, 1, 2],
                                    steps=150, batch_size=20, eval_every=50, progress=False)
    assert all(history.final() > 0.9 for history in histories)
    stacked = StackedModels([copy.deepcopy(models[0]) for _ in range(3)])  # three identical models
    out = stacked(torch.randn(1, 20, 4).expand(3, 20, 4))  # one batch, shown to all three
    assert not torch.equal(out[0], out[1]) and not torch.equal(out[1], out[2])


def infinite_weight_in_second_model(norm):
    """A builder whose second call returns a model with an infinite weight in its output layer."""
    calls = []

    def build():
        model = float64_mlp(norm)()
        calls.append(model)
        if len(calls) == 2:
            with torch.no_grad():
                model[-1].weight[0, 0] = float("inf")
        return model
    return build


@pytest.mark.parametrize("norm", [None, BatchNorm], ids=["no norm", "lib BatchNorm"])
def test_a_diverging_seed_leaves_the_others_alone(norm):
    make_optimizer = OPTIMIZERS["Adam weight decay"]
    models, histories = train_seeds(infinite_weight_in_second_model(norm), blobs(), make_optimizer, SEEDS, **FIT)
    assert [history.diverged for history in histories] == [False, True, False]
    assert histories[1].steps == [0] and np.isnan(histories[1].val_loss[0]) and histories[1].step_loss == []
    assert torch.isinf(models[1][-1].weight[0, 0])  # it keeps its weights of the moment it diverged
    for index in (0, 2):
        assert_same_run(models[index], histories[index], *separate_run(float64_mlp(norm), make_optimizer, SEEDS[index]))


def test_train_seeds_translates_epochs_to_steps():
    _, histories = train_seeds(lambda: mlp([4, 8, 3]), blobs(), lambda params: torch.optim.SGD(params, lr=0.1),
                               [0, 1], epochs=2, batch_size=20, eval_every=5, progress=False)
    assert [history.steps[-1] for history in histories] == [2 * (200 // 20)] * 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_train_seeds_on_cuda_matches_separate_runs():
    cuda = torch.device("cuda")
    make_optimizer = OPTIMIZERS["Adam weight decay"]
    models, histories = train_seeds(float64_mlp(BatchNorm), blobs(), make_optimizer, SEEDS, device=cuda, **FIT)
    assert all(p.device.type == "cuda" for model in models for p in model.parameters())
    for seed, model, history in zip(SEEDS, models, histories):
        assert_same_run(model, history, *separate_run(float64_mlp(BatchNorm), make_optimizer, seed, device=cuda))


def sgd(params):
    return torch.optim.SGD(params, lr=0.1)


def seeds_call(build=lambda: mlp([4, 3]), make_optimizer=sgd, seeds=(0, 1), **kw):
    return lambda: train_seeds(build, blobs(), make_optimizer, seeds, **{"steps": 5, "progress": False, **kw})


@pytest.mark.parametrize("call,error,match", [
    (seeds_call(seeds=[]), ValueError, r"seeds: expected at least one seed"),
    (seeds_call(seeds=[1, 2, 1]), ValueError, r"seeds: expected distinct seeds, got \[1\]"),
    (seeds_call(seeds=[0, 1.5]), TypeError, r"seeds\[1\]: expected an integer"),
    (seeds_call(seeds=[0, -1]), ValueError, r"seeds\[1\]: expected an integer >= 0"),
    (seeds_call(seeds=3), TypeError, r"seeds: expected a list of integers"),
    (seeds_call(steps=None), ValueError, r"steps, epochs: give exactly one"),
    (seeds_call(epochs=1), ValueError, r"steps, epochs: give exactly one"),
    (seeds_call(steps=0), ValueError, r"steps: expected an integer >= 1"),
    (seeds_call(batch_size=0), ValueError, r"batch_size"),
    (seeds_call(eval_every=0), ValueError, r"eval_every"),
    (seeds_call(build=mlp([4, 3])), TypeError, r"build_model: expected a function"),
    (seeds_call(build=lambda: "model"), TypeError, r"build_model: expected it to return an nn.Module"),
    (seeds_call(build=lambda model=mlp([4, 3]): model), ValueError, r"build_model: returned the same model twice"),
    (seeds_call(build=lambda widths=iter([5, 6]): mlp([4, next(widths), 3])), ValueError, r"build_model: .* same"),
    (seeds_call(make_optimizer=None), TypeError, r"make_optimizer: expected a function"),
    (seeds_call(make_optimizer=lambda params: params), TypeError, r"make_optimizer: expected it to return"),
    (lambda: mean_spread([0.5]), ValueError, r"values: need at least 2 seeds"),
    (lambda: mean_spread(np.ones((2, 2, 2))), ValueError, r"values: expected 1 or 2 dimensions"),
    (lambda: format_mean_spread([0.5, 0.6], digits=-1), ValueError, r"digits"),
    (lambda: metric_over_seeds([]), ValueError, r"histories: expected at least one run"),
    (lambda: metric_over_seeds([History()], metric="acc"), ValueError, r"metric: expected one of"),
    (lambda: metric_over_seeds([History([0, 1], val_acc=[0, 0]), History([0, 2], val_acc=[0, 0])]), ValueError,
     r"histories: run 1 recorded at other steps"),
    (lambda: SeedwiseSGD([torch.zeros(2, 3, requires_grad=True)], lrs=[0.1, -1.0]), ValueError, r"lrs: expected one finite"),
    (lambda: SeedwiseSGD([torch.zeros(2, 3, requires_grad=True)], lrs=[0.1, 0.2, 0.3]), ValueError,
     r"lrs: got 3 values, but a parameter of shape \(2, 3\) is stacked over 2 seeds"),
    (lambda: SeedwiseSGD([torch.zeros(2, 3, requires_grad=True)], lrs=[0.1, 0.1], weight_decays=[0.1]), ValueError,
     r"weight_decays: got 1 values"),
    (lambda: compare_over_seeds([1, 2], [3, 4], names="ab"), TypeError, r"names: expected two strings"),
    (lambda: compare_over_seeds([1, 2], [3, 4], larger=1), TypeError, r"larger: expected a string"),
    (lambda: compare_over_seeds([1], [3, 4]), ValueError, r"values: need at least 2 seeds"),
])
def test_train_seeds_and_summaries_reject_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_mean_spread_is_the_sample_standard_deviation():
    mean, std = mean_spread([0.60, 0.62, 0.64])
    assert mean == pytest.approx(0.62) and std == pytest.approx(0.02)  # divided by k - 1 = 2
    assert format_mean_spread([0.60, 0.62, 0.64]) == "0.620 ± 0.020"
    means, stds = mean_spread(np.array([[1.0, 2.0], [3.0, 2.0]]))
    np.testing.assert_allclose(means, [2.0, 2.0])
    np.testing.assert_allclose(stds, [np.sqrt(2), 0.0])


def test_compare_over_seeds_applies_the_spreads_added_rule():
    # means 0.5 and 0.3, spreads 0.1 and 0.05: a difference of 0.2 > 0.15 counts
    result = compare_over_seeds([0.4, 0.5, 0.6], [0.25, 0.3, 0.35], names=("BN", "plain"))
    assert result.difference == pytest.approx(0.2) and result.margin == pytest.approx(0.15)
    assert result.verdict == "BN higher" and str(result) == "+0.200, spreads added 0.150: BN higher"
    assert compare_over_seeds([0.25, 0.3, 0.35], [0.4, 0.5, 0.6], names=("x", "y")).verdict == "y higher"
    # a difference of 0.1 inside spreads of 0.15 does not count
    assert compare_over_seeds([0.3, 0.4, 0.5], [0.25, 0.3, 0.35]).verdict == "no difference at this scale"
    assert compare_over_seeds([100, 200], [300, 400], larger="later").verdict == "b later"
    assert compare_over_seeds([0.1, np.nan], [0.2, 0.3]).verdict.startswith("not comparable")


@pytest.mark.parametrize("weight_decays", [None, [0.0, 0.01]])
def test_seedwise_sgd_moves_each_seed_as_torch_sgd_with_its_rate_and_decay(weight_decays):
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(2, 3, 4, generator=generator, dtype=torch.float64)
    grads = torch.randn(2, 3, 4, generator=generator, dtype=torch.float64)
    stacked = weights.clone().requires_grad_()
    stacked.grad = grads.clone()
    SeedwiseSGD([stacked], lrs=[0.1, 0.5], weight_decays=weight_decays).step()
    for index, lr in enumerate([0.1, 0.5]):
        single = weights[index].clone().requires_grad_()
        single.grad = grads[index].clone()
        torch.optim.SGD([single], lr=lr, weight_decay=0.0 if weight_decays is None else weight_decays[index]).step()
        torch.testing.assert_close(stacked[index].detach(), single.detach(), rtol=1e-14, atol=1e-15)


def test_seedwise_sgd_trains_each_seed_as_a_separate_run_at_its_rate():
    lrs = [0.05, 0.2]
    models, histories = train_seeds(float64_mlp(None), blobs(), lambda params: SeedwiseSGD(params, lrs), SEEDS[:2], **FIT)
    for seed, lr, model, history in zip(SEEDS, lrs, models, histories):
        reference = separate_run(float64_mlp(None), lambda params: torch.optim.SGD(params, lr=lr), seed)
        assert_same_run(model, history, *reference)


@pytest.mark.parametrize("k, rate", [(3, 0.082), (5, 0.016)])
def test_compare_over_seeds_false_alarm_rate_is_what_its_docstring_says(k, rate):
    # Both sides drawn from one normal distribution: every verdict other than "no difference" is a false alarm.
    rng = np.random.default_rng(0)
    trials = 3000
    alarms = sum(compare_over_seeds(rng.normal(size=k), rng.normal(size=k)).verdict != "no difference at this scale"
                 for _ in range(trials))
    assert abs(alarms / trials - rate) < 4 * np.sqrt(rate * (1 - rate) / trials)   # within 4 standard errors


def test_final_over_seeds_is_the_last_value_and_nan_after_divergence():
    full = History(steps=[0, 10, 20], val_acc=[0.1, 0.5, 0.9], train_loss=[2.0, 1.0, 0.5])
    stopped = History(steps=[0, 10], val_acc=[0.2, 0.4], train_loss=[2.0, 9.0], diverged=True)
    np.testing.assert_array_equal(final_over_seeds([full, stopped]), [0.9, np.nan])
    np.testing.assert_array_equal(final_over_seeds([full, full], "train_loss"), [0.5, 0.5])


def test_final_over_seeds_is_nan_when_every_run_diverged():
    # every row is cut short, so the longest one is too: its last value predates the divergence
    first = History(steps=[0, 10], val_acc=[0.1, 0.3], diverged=True)
    second = History(steps=[0], val_acc=[0.2], diverged=True)
    np.testing.assert_array_equal(final_over_seeds([first, second]), [np.nan, np.nan])


def test_metric_over_seeds_pads_a_diverged_run_with_nan():
    full = History(steps=[0, 10, 20], val_acc=[0.1, 0.5, 0.9])
    stopped = History(steps=[0, 10], val_acc=[0.2, 0.4], diverged=True)
    steps, values = metric_over_seeds([full, stopped])
    np.testing.assert_array_equal(steps, [0, 10, 20])
    np.testing.assert_array_equal(values, [[0.1, 0.5, 0.9], [0.2, 0.4, np.nan]])


def test_mean_band_plot_and_learning_curves_take_lists_of_histories():
    import matplotlib.pyplot as plt
    runs = [History(steps=[0, 10, 20], val_acc=[0.1 + d, 0.5 + d, 0.9 - d]) for d in (0.0, 0.05, 0.1)]
    ax = plot_mean_band(runs, label="SGD")
    assert ax.lines[0].get_label() == "SGD (mean ± std over 3 seeds)" and len(ax.collections) == 1
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.15, 0.55, 0.85])
    ax = plot_learning_curves({"three seeds": runs, "one run": runs[0]})
    assert [line.get_label() for line in ax.lines] == ["three seeds (mean ± std over 3 seeds)", "one run"]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    plt.close("all")


# ---------------------------------------------------------------------------------------
# augment: a transform of every training mini-batch
# ---------------------------------------------------------------------------------------

def noise_and_soft_labels(x, y, rng):
    """A random, label-softening augmentation: Gaussian noise, and 0.9 on the true class."""
    noisy = x + torch.as_tensor(rng.normal(0, 0.5, size=tuple(x.shape)), dtype=x.dtype)
    soft = torch.full((len(y), 3), 0.05, dtype=x.dtype)
    soft[torch.arange(len(y)), y] = 0.9
    return noisy, soft


def test_augment_changes_training_batches_only_and_is_seeded():
    seen = []

    def spy(x, y, rng):
        seen.append(len(x))
        return noise_and_soft_labels(x, y, rng)

    model, history = run(steps=60, augment=spy)
    assert seen == [20] * 60  # once per training step, never on the evaluation data
    _, again = run(steps=60, augment=noise_and_soft_labels)
    assert history.val_loss == again.val_loss
    _, plain = run(steps=60)
    assert history.val_loss != plain.val_loss and history.final() > 0.9


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_each_seed_gets_the_augmentations_of_a_separate_run(make_optimizer):
    models, histories = train_seeds(float64_mlp(None), blobs(), make_optimizer, SEEDS, augment=noise_and_soft_labels,
                                    **FIT)
    for seed, model, history in zip(SEEDS, models, histories):
        reference = separate_run(float64_mlp(None), make_optimizer, seed, augment=noise_and_soft_labels)
        assert_same_run(model, history, *reference)


def test_augment_must_be_a_function():
    with pytest.raises(TypeError, match=r"augment: expected None or a function"):
        run(augment="flip")
    with pytest.raises(TypeError, match=r"augment: expected None or a function"):
        train_seeds(float64_mlp(None), blobs(), OPTIMIZERS["SGD momentum"], SEEDS, augment=3, **FIT)


def test_small_cnn_maps_images_to_logits_and_checks_its_image_size():
    from lib.models import small_cnn

    assert small_cnn()(torch.zeros(5, 1, 8, 8)).shape == (5, 10)
    assert small_cnn(3, 10, width=4, image_hw=(32, 32))(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"image_hw: expected \(height, width\), two even integers"):
        small_cnn(image_hw=(7, 8))
    with pytest.raises(ValueError, match=r"num_classes: expected an integer >= 2"):
        small_cnn(num_classes=1)


def test_train_seeds_takes_one_augment_per_seed_and_mixes_labels_and_probabilities():
    augments = [None, noise_and_soft_labels, None]
    models, histories = train_seeds(float64_mlp(None), blobs(), OPTIMIZERS["SGD momentum"], SEEDS, augment=augments,
                                    **FIT)
    for seed, augment, model, history in zip(SEEDS, augments, models, histories):
        assert_same_run(model, history, *separate_run(float64_mlp(None), OPTIMIZERS["SGD momentum"], seed,
                                                      augment=augment))
    with pytest.raises(ValueError, match=r"augment: expected one entry per seed \(3\), got 2"):
        train_seeds(float64_mlp(None), blobs(), OPTIMIZERS["SGD momentum"], SEEDS, augment=[None, None], **FIT)
    with pytest.raises(TypeError, match=r"augment: expected None or a function"):
        train_seeds(float64_mlp(None), blobs(), OPTIMIZERS["SGD momentum"], SEEDS, augment=[None, 1, None], **FIT)


# ---------------------------------------------------------------------------------------
# Learning-rate schedules and per-update logs
# ---------------------------------------------------------------------------------------

def halve_at_5(t):
    return 0.1 if t < 5 else 0.05


def test_a_schedule_gives_the_weights_of_a_hand_written_loop_that_sets_the_rate():
    set_seed(0)
    model = float64_mlp(None)()
    history = train(model, blobs(), torch.optim.SGD(model.parameters(), lr=1.0), steps=10, batch_size=20, eval_every=5,
                    progress=False, schedule=halve_at_5)
    set_seed(0)
    reference = float64_mlp(None)()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    batches = iter(TensorBatches(*to_tensors(blobs().x_train, blobs().y_train, dtype=torch.float64), 20, seed=0))
    for t in range(10):
        if t == 5:
            optimizer.param_groups[0]["lr"] = 0.05
        x, y = next(batches)
        optimizer.zero_grad()
        nn.functional.cross_entropy(reference(x), y).backward()
        optimizer.step()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert history.step_lr == [0.1] * 5 + [0.05] * 5 and history.lr == [0.1, 0.1, 0.05]


def test_without_a_schedule_the_logs_hold_the_optimizers_rate_and_a_constant_schedule_changes_nothing():
    model, history = run()
    scheduled_model, scheduled = run(schedule=lambda t: 0.1)
    assert history.val_loss == scheduled.val_loss and history.step_loss == scheduled.step_loss
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), scheduled_model.state_dict().values()))
    assert history.lr == [0.1] * 4 and history.step_lr == [0.1] * 150
    assert len(history.step_loss) == 150 and history.step_extra == {}
    # a record's train_loss averages the mini-batch losses since the previous record
    assert history.train_loss[1] == pytest.approx(np.mean(history.step_loss[:50]), rel=1e-12)


def test_a_schedule_per_epoch_changes_the_rate_only_at_epoch_boundaries():
    _, history = run(steps=30, schedule=lambda epoch: 0.1 * 0.5 ** epoch, schedule_per="epoch")  # 10 steps an epoch
    assert history.step_lr == [0.1] * 10 + [0.05] * 10 + [0.025] * 10
    assert history.steps == [0, 30] and history.lr == [0.1, 0.025]


def test_on_step_sees_the_gradients_before_the_update_and_fills_step_extra():
    def gradient_norm(step, loss, model):
        assert model.training and isinstance(loss, float)
        norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
        return {"step": step, "grad_norm": float(norm), "loss": loss}

    _, history = run(steps=60, on_step=gradient_norm)
    assert history.step_extra["step"] == list(range(1, 61)) and history.step_extra["loss"] == history.step_loss
    assert all(norm > 0 for norm in history.step_extra["grad_norm"])
    _, quiet = run(steps=60, on_step=lambda step, loss, model: None)
    assert quiet.step_extra == {} and quiet.val_loss == history.val_loss  # logging only


@pytest.mark.parametrize("schedule_per", ["step", "epoch"])
def test_train_seeds_with_a_schedule_matches_separate_runs(schedule_per):
    make_optimizer = OPTIMIZERS["SGD momentum"]
    kw = dict(schedule=halve_at_5, schedule_per=schedule_per)
    models, histories = train_seeds(float64_mlp(BatchNorm), blobs(), make_optimizer, SEEDS, **FIT, **kw)
    for seed, model, history in zip(SEEDS, models, histories):
        assert_same_run(model, history, *separate_run(float64_mlp(BatchNorm), make_optimizer, seed, **kw))
        assert len(history.step_loss) == len(history.step_lr) == 100 and len(history.lr) == len(history.steps)
    assert len({tuple(history.step_loss) for history in histories}) == 3  # each seed its own losses


def test_train_seeds_logs_seedwise_sgds_rate_of_each_seed():
    _, histories = train_seeds(float64_mlp(None), blobs(), lambda params: SeedwiseSGD(params, [0.05, 0.2]), [0, 1],
                               **FIT)
    assert [history.lr for history in histories] == [[0.05] * 4, [0.2] * 4]
    assert [set(history.step_lr) for history in histories] == [{0.05}, {0.2}]


@pytest.mark.parametrize("kw,error,match", [
    (dict(schedule="cosine"), TypeError, r"schedule: expected None or a function step -> learning rate"),
    (dict(schedule=lambda t: -0.1), ValueError, r"schedule\(0\): expected a finite number >= 0, got -0.1"),
    (dict(schedule=lambda t: "0.1"), TypeError, r"schedule\(0\): expected a real number"),
    (dict(schedule=lambda t: 0.1 if t < 3 else float("nan")), ValueError, r"schedule\(3\): expected a finite number"),
    (dict(schedule=halve_at_5, schedule_per="batch"), ValueError, r"schedule_per: expected one of 'step', 'epoch'"),
    (dict(on_step="grad norm"), TypeError, r"on_step: expected None or a function"),
    (dict(on_step=lambda step, loss, model: [loss]), TypeError, r"on_step: expected it to return a dict or None"),
])
def test_schedule_and_on_step_reject_bad_input(kw, error, match):
    with pytest.raises(error, match=match):
        run(steps=10, **kw)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_train_seeds_with_one_schedule_per_seed_matches_separate_runs(optimizer):
    # the optimizer steps at rate 1 and each seed's move is scaled by its own rate: exact for SGD
    # with momentum and for Adam with weight decay, whose moves are proportional to the rate
    make_optimizer = OPTIMIZERS[optimizer]
    schedules = [halve_at_5, lambda t: 0.02 * (1 + t % 3), lambda t: 0.03]
    models, histories = train_seeds(float64_mlp(BatchNorm), blobs(), make_optimizer, SEEDS, **FIT, schedule=schedules)
    for seed, schedule, model, history in zip(SEEDS, schedules, models, histories):
        assert_same_run(model, history, *separate_run(float64_mlp(BatchNorm), make_optimizer, seed, schedule=schedule))
        assert history.step_lr == [schedule(t) for t in range(100)]


def test_train_seeds_rejects_bad_schedules():
    with pytest.raises(ValueError, match=r"schedule: expected one function per seed \(2\), got 3"):
        seeds_call(schedule=[halve_at_5] * 3)()
    with pytest.raises(TypeError, match=r"schedule\[1\]: expected a function step -> learning rate, got None"):
        seeds_call(schedule=[halve_at_5, None])()
    with pytest.raises(ValueError, match=r"schedule_per: expected one of"):
        seeds_call(schedule=halve_at_5, schedule_per="update")()
    with pytest.raises(TypeError, match=r"schedule: expected None or a function"):
        seeds_call(schedule=0.1)()
    with pytest.raises(ValueError, match=r"schedule: SeedwiseSGD keeps a fixed rate per seed"):
        seeds_call(make_optimizer=lambda params: SeedwiseSGD(params, [0.1, 0.2]), schedule=halve_at_5)()


# ---------------------------------------------------------------------------------------
# Early stopping and atomic checkpoints
# ---------------------------------------------------------------------------------------

def overfitting_blobs():
    """Blobs with a third of the training labels drawn at random: the validation loss falls, then rises."""
    data = blobs()
    noisy = data.y_train.copy()
    noisy[::3] = np.random.default_rng(1).integers(0, 3, size=len(noisy[::3]))
    return Splits(data.x_train, noisy, data.x_val, data.y_val, data.x_test, data.y_test)


DTYPES = {"float32": torch.float32, "float64": torch.float64}


@pytest.mark.parametrize("on_disk", [False, True], ids=["in memory", "on disk"])
@pytest.mark.parametrize("norm", [None, BatchNorm], ids=["no norm", "lib BatchNorm"])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_early_stopping_gives_back_exactly_the_best_records_weights(dtype, norm, on_disk, tmp_path):
    set_seed(0)
    model = mlp([4, 64, 64, 3], nn.ReLU, norm).to(dtype)
    data = overfitting_blobs()
    stopper = EarlyStopping(patience=3, checkpoint_path=tmp_path / "best.pt" if on_disk else None)
    history = train(model, data, torch.optim.Adam(model.parameters(), lr=0.02), steps=600, batch_size=20,
                    eval_every=10, progress=False, early_stopping=stopper)
    best = history.steps.index(history.best_step)
    assert history.stopped_step == history.steps[-1] == history.best_step + 3 * 10 < 600  # three checks without gain
    assert history.val_loss[best] == min(history.val_loss) == stopper.best_value
    x_val, y_val = to_tensors(data.x_val, data.y_val, dtype=dtype)
    assert evaluate(model, x_val, y_val) == (history.val_loss[best], history.val_acc[best])  # exactly, not about
    assert sorted(path.name for path in tmp_path.iterdir()) == (["best.pt"] if on_disk else [])


def test_early_stopping_restores_the_initial_weights_when_nothing_improves():
    set_seed(0)
    model = mlp([4, 16, 3])
    initial = copy.deepcopy(model.state_dict())
    history = train(model, blobs(), torch.optim.SGD(model.parameters(), lr=0.0), steps=50, batch_size=20,
                    eval_every=10, progress=False, early_stopping=EarlyStopping(patience=2))
    assert history.best_step == 0 and history.stopped_step == 20
    assert all(torch.equal(initial[name], tensor) for name, tensor in model.state_dict().items())


def test_a_run_without_early_stopping_leaves_best_and_stopped_step_empty():
    _, history = run(steps=20)
    assert history.best_step is None and history.stopped_step is None


def weights_set_to(value):
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def checks(stopper, values):
    """Feed ``values`` to ``stopper`` as checks at steps 0, 1, ... (model weights = the step); the answers."""
    return [stopper.update(step, value, weights_set_to(step)) for step, value in enumerate(values)]


def test_early_stopping_stops_after_exactly_patience_checks_without_improvement():
    stopper = EarlyStopping(patience=3)
    assert checks(stopper, [1.0, 0.9, 0.95, 0.91, 0.92]) == [False, False, False, False, True]
    assert (stopper.best_step, stopper.best_value, stopper.stopped_step) == (1, 0.9, 4)
    assert torch.equal(stopper.restore(nn.Linear(2, 2)).weight, torch.full((2, 2), 1.0))  # step 1's weights
    stopper = EarlyStopping(patience=2)
    assert checks(stopper, [1.0, 1.1, 0.8, 0.9, 0.7, 0.75]) == [False] * 6  # each gain resets the count
    assert stopper.best_step == 4 and stopper.stopped_step is None


def test_early_stopping_needs_a_gain_larger_than_min_delta_and_never_counts_nan_as_one():
    stopper = EarlyStopping(patience=3, min_delta=0.1)
    assert checks(stopper, [1.0, 0.95, 0.9, 0.89]) == [False, False, False, False] and stopper.best_step == 3
    stopper = EarlyStopping(patience=2)
    assert checks(stopper, [1.0, float("nan"), float("nan")]) == [False, False, True] and stopper.best_step == 0


def test_early_stopping_maximizes_an_accuracy():
    stopper = EarlyStopping(patience=2, metric="val_acc")
    assert stopper.mode == "max"
    assert checks(stopper, [0.5, 0.6, 0.55, 0.6]) == [False, False, False, True]
    assert (stopper.best_step, stopper.best_value) == (1, 0.6)
    assert EarlyStopping(patience=1, metric="train_acc", mode="min").mode == "min"


def test_an_interrupted_checkpoint_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    first = weights_set_to(1.0).state_dict()
    save_checkpoint(first, path)

    def crash_halfway(state, file):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(lib.train.torch, "save", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(weights_set_to(2.0).state_dict(), path)
    monkeypatch.undo()
    loaded = load_checkpoint(path)
    assert loaded.keys() == first.keys() and all(torch.equal(loaded[name], first[name]) for name in first)
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary file left behind


def test_train_rejects_a_used_early_stopping():
    stopper = EarlyStopping(patience=2)
    run(steps=20, early_stopping=stopper)
    with pytest.raises(ValueError, match=r"early_stopping: expected a new EarlyStopping"):
        run(steps=20, early_stopping=stopper)


@pytest.mark.parametrize("call,error,match", [
    (lambda: EarlyStopping(patience=0), ValueError, r"patience: expected an integer >= 1"),
    (lambda: EarlyStopping(patience=2.5), TypeError, r"patience: expected an integer"),
    (lambda: EarlyStopping(patience=2, metric="val_error"), ValueError, r"metric: expected one of"),
    (lambda: EarlyStopping(patience=2, mode="lower"), ValueError, r"mode: expected one of 'min', 'max'"),
    (lambda: EarlyStopping(patience=2, min_delta=-0.1), ValueError, r"min_delta: expected a finite number >= 0"),
    (lambda: EarlyStopping(patience=2, checkpoint_path=3), TypeError, r"checkpoint_path: expected a file path"),
    (lambda: EarlyStopping(patience=2).update(0, "low", nn.Linear(2, 2)), TypeError, r"value: expected a real number"),
    (lambda: EarlyStopping(patience=2).update(-1, 0.5, nn.Linear(2, 2)), ValueError, r"step: expected an integer >= 0"),
    (lambda: EarlyStopping(patience=2).update(0, 0.5, {}), TypeError, r"model: expected an nn.Module"),
    (lambda: EarlyStopping(patience=2).restore(nn.Linear(2, 2)), RuntimeError, r"no check taken yet"),
    (lambda: run(steps=10, early_stopping=3), TypeError, r"early_stopping: expected None or an EarlyStopping"),
    (lambda: save_checkpoint([1.0], "x.pt"), TypeError, r"state: expected a dict"),
    (lambda: save_checkpoint({}, 3), TypeError, r"path: expected a file path"),
    (lambda: load_checkpoint(None), TypeError, r"path: expected a file path"),
])
def test_early_stopping_and_checkpoints_reject_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_set_seed_turns_on_deterministic_algorithms_without_importing_the_compiler():
    # set_seed sets torch's flag itself, to spare each notebook the ~2.5 s import of torch._inductor
    # that the public call costs; the flag must read exactly as the public call leaves it.
    import subprocess
    import sys
    code = ("import sys, torch; from lib.device import set_seed; set_seed(0); "
            "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(), "
            "'torch._inductor' in sys.modules)")
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert printed == ["True", "True", "False"]
