"""k seeds trained one after another with ``train``, against all k at once with ``train_seeds``.

    python benchmarks/seeds_batched.py          # on the CPU, one thread
    python benchmarks/seeds_batched.py cuda     # on the GPU

The book's typical run: MNIST-1D, MLP 40→100→100→100→10 with sigmoids, with and without
lib's BatchNorm, SGD lr 0.1, batch 60, 1000 steps, evaluation every 100 steps. On the CPU
torch runs on one thread, as ``lib.device.tune_for_small_models`` sets. Wall time in
seconds, best of ``REPEAT`` runs (environment variable, default 3). ``KS=1,3`` and
``MODELS=plain`` or ``MODELS=bn`` (environment variables) measure part of the table.
"""
import os
import platform
import sys
import time

import torch
from torch import nn

from lib.data import mnist1d_splits
from lib.device import set_seed
from lib.models import mlp
from lib.normalization import BatchNorm
from lib.train import train, train_seeds

SIZES, STEPS, BATCH_SIZE, EVAL_EVERY, LR = [40, 100, 100, 100, 10], 1000, 60, 100, 0.1
KS = [int(k) for k in os.environ.get("KS", "1,3,5,8").split(",")]
MODELS = os.environ.get("MODELS", "plain,bn").split(",")
REPEAT = int(os.environ.get("REPEAT", 3))


def builder(batch_norm: bool, device):
    return lambda: mlp(SIZES, nn.Sigmoid, BatchNorm if batch_norm else None).to(device)


def one_by_one(data, seeds, batch_norm, device, steps=STEPS):
    for seed in seeds:
        set_seed(seed)
        model = builder(batch_norm, device)()
        train(model, data, torch.optim.SGD(model.parameters(), lr=LR), steps=steps, batch_size=BATCH_SIZE,
              eval_every=EVAL_EVERY, seed=seed, progress=False)


def all_at_once(data, seeds, batch_norm, device, steps=STEPS):
    train_seeds(builder(batch_norm, device), data, lambda params: torch.optim.SGD(params, lr=LR), seeds,
                steps=steps, batch_size=BATCH_SIZE, eval_every=EVAL_EVERY, progress=False)


def seconds(run, data, seeds, batch_norm, device):
    run(data, seeds, batch_norm, device, steps=50)  # warm-up: kernels loaded, memory allocated
    best = float("inf")
    for _ in range(REPEAT):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run(data, seeds, batch_norm, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


if __name__ == "__main__":
    device = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cpu")
    torch.set_num_threads(1)
    data = mnist1d_splits(val_fraction=0.1)
    for warm_up in (one_by_one, all_at_once):  # a fresh process runs its first 1000 steps slower
        warm_up(data, [0, 1], False, device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {device.type} ({name}), {torch.get_num_threads()} CPU thread(s), "
          f"{STEPS} steps, best of {REPEAT}\n")
    header = f"{'model':<14} {'k':>2} {'k × train (s)':>14} {'train_seeds (s)':>16} {'speed-up':>9}"
    print(header + "\n" + "-" * len(header))
    for batch_norm in [model == "bn" for model in MODELS]:
        for k in KS:
            seeds = list(range(k))
            sequential = seconds(one_by_one, data, seeds, batch_norm, device)
            batched = seconds(all_at_once, data, seeds, batch_norm, device)
            label = "MLP + lib BN" if batch_norm else "MLP"
            print(f"{label:<14} {k:>2} {sequential:14.2f} {batched:16.2f} {sequential / batched:8.1f}×", flush=True)
