import numpy as np
import pytest
import torch
from torch import nn

from lib.data import Splits
from lib.device import get_device, set_seed
from lib.models import mlp
from lib.normalization import BatchNorm
from lib.train import accuracy_on_test, evaluate, train


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
    (lambda: set_seed(-1), ValueError, r"seed: expected an integer >= 0"),
    (lambda: set_seed(1.5), TypeError, r"seed: expected an integer"),
    (lambda: get_device("tpu"), ValueError, r"prefer: expected None, 'cpu' or 'cuda'"),
])
def test_training_rejects_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_mlp_drops_the_bias_before_a_norm():
    with_norm = mlp([4, 8, 8, 3], norm=BatchNorm)
    plain = mlp([4, 8, 8, 3])
    assert [m.bias is None for m in with_norm if isinstance(m, nn.Linear)] == [True, True, False]
    assert all(m.bias is not None for m in plain if isinstance(m, nn.Linear))


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
