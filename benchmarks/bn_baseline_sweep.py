"""How the plain network of the batch-norm experiment (normalization, notebook 04) was chosen.

    python benchmarks/bn_baseline_sweep.py

Ioffe & Szegedy (2015, section 4.1) initialize their MNIST network with "small random
Gaussian values" and give neither the standard deviation nor the learning rate. This
sweep trains the notebook's plain network (40 → 100 → 100 → 100 sigmoid units → 10,
no batch norm) with every weight drawn from N(0, σ²), zero biases, plain SGD with
batches of 60 for 1,000 steps, over a grid of σ and learning rates, two seeds each (all
in one batched ``train_seeds`` run). It prints the final validation accuracy as
mean ± spread, and the same for PyTorch's default initialization. The notebook takes
σ = 0.3 with base rate 0.5, where the plain network learns, as its baseline.
"""
from lib.reproducible import pin_cpu_numerics

pin_cpu_numerics()   # before NumPy and torch load: the same digits as the notebooks print

import itertools  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from lib.data import mnist1d_splits  # noqa: E402
from lib.device import tune_for_small_models  # noqa: E402
from lib.initialization import init_model_  # noqa: E402
from lib.models import mlp  # noqa: E402
from lib.train import SeedwiseSGD, final_over_seeds, format_mean_spread, train_seeds  # noqa: E402

SIZES, STEPS, BATCH_SIZE = [40, 100, 100, 100, 10], 1000, 60
SIGMAS = [None, 0.01, 0.1, 0.3, 1.0]   # None: PyTorch's default, uniform in ±1/√fan-in
RATES = [0.1, 0.5, 2.0]
SEEDS_EACH = 2


def main():
    tune_for_small_models(torch.device("cpu"))
    data = mnist1d_splits(val_fraction=0.1)
    configs = [config for config in itertools.product(SIGMAS, RATES) for _ in range(SEEDS_EACH)]
    pending = iter(configs)

    def build():
        sigma, _ = next(pending)   # train_seeds builds the models in the order of its seeds
        model = mlp(SIZES, activation=nn.Sigmoid)
        return model if sigma is None else init_model_(model, "normal", std=sigma)

    rates = [rate for _, rate in configs]
    _, histories = train_seeds(build, data, lambda params: SeedwiseSGD(params, rates), list(range(len(configs))),
                               steps=STEPS, batch_size=BATCH_SIZE, eval_every=STEPS, progress=False)
    finals = final_over_seeds(histories)
    print(f"final validation accuracy after {STEPS} steps, mean ± spread over {SEEDS_EACH} seeds\n")
    print(f"{'initial weights':>18}" + "".join(f"{f'lr {rate:g}':>16}" for rate in RATES))
    for sigma in SIGMAS:
        first = [configs.index((sigma, rate)) for rate in RATES]   # each configuration's seeds are adjacent
        cells = [format_mean_spread(finals[i:i + SEEDS_EACH]) for i in first]
        name = "PyTorch default" if sigma is None else f"N(0, {sigma:g}²)"
        print(f"{name:>18}" + "".join(f"{cell:>16}" for cell in cells))


if __name__ == "__main__":
    main()
