"""Batch norm forward + backward: the NumPy reference (staged and closed-form backward) against
torch on the CPU (lib's BatchNorm module and torch.nn.functional.batch_norm, autograd backward).

    python benchmarks/batchnorm_speed.py

Median of repeated timings, in milliseconds, float32 throughout.
"""
import os
import timeit

import numpy as np
import torch
import torch.nn.functional as F

from lib.normalization import BatchNorm, batchnorm_backward, batchnorm_backward_alt, batchnorm_forward

SHAPES = [(64, 100), (256, 1024), (1024, 4096), (32, 64, 16, 16), (64, 128, 32, 32)]


def median_ms(function, repeat=7):
    number = max(1, int(0.2 / max(timeit.timeit(function, number=1), 1e-6)))
    return 1e3 * float(np.median(timeit.repeat(function, number=number, repeat=repeat))) / number


def numpy_step(x, gamma, beta, dout, backward):
    def step():
        _, cache = batchnorm_forward(x, gamma, beta, {"mode": "train"})
        backward(dout, cache)
    return step


def torch_step(x, dout, forward):
    def step():
        x.grad = None
        forward(x).backward(dout)
    return step


if __name__ == "__main__":
    torch.set_num_threads(os.cpu_count())
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, numpy {np.__version__}\n")
    header = f"{'shape':<20} {'NumPy staged':>13} {'NumPy closed':>13} {'torch lib.BatchNorm':>20} {'torch F.batch_norm':>19}"
    print(header + "\n" + "-" * len(header))
    for shape in SHAPES:
        channels = shape[1]
        x = rng.normal(size=shape).astype(np.float32)
        dout = rng.normal(size=shape).astype(np.float32)
        gamma, beta = np.ones(channels, np.float32), np.zeros(channels, np.float32)
        x_t, dout_t = torch.tensor(x, requires_grad=True), torch.tensor(dout)
        module = BatchNorm(channels)
        weight, bias = torch.ones(channels, requires_grad=True), torch.zeros(channels, requires_grad=True)
        times = [
            median_ms(numpy_step(x, gamma, beta, dout, batchnorm_backward)),
            median_ms(numpy_step(x, gamma, beta, dout, batchnorm_backward_alt)),
            median_ms(torch_step(x_t, dout_t, module)),
            median_ms(torch_step(x_t, dout_t, lambda v: F.batch_norm(v, None, None, weight, bias, training=True))),
        ]
        print(f"{str(shape):<20} {times[0]:13.3f} {times[1]:13.3f} {times[2]:20.3f} {times[3]:19.3f}", flush=True)
