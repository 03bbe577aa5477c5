"""Augmentation throughput: one pipeline (random resized crop, flip, colour jitter) applied three
ways on the CPU, one image at a time in NumPy (as a DataLoader's per-sample transforms), as a
NumPy batch, and as one torch call per step, plus the torch batch on the GPU when there is one.

    python benchmarks/augmentation_throughput.py
    THREADS=1 python benchmarks/augmentation_throughput.py     # torch on one CPU thread

Images per second (higher is better), best of repeated timings, float32 inputs. Every way
draws its parameters with NumPy inside the timing, as in training. The GPU's input batch is
already on the device (the copy from the host is not timed).

A last table times one multiply on a 224 × 224 batch with and without a new result array: on
the machine that built the book, the multiply into a new 37 MiB torch tensor took 32 to 38 ms,
4 to 10 times as long as the same multiply in place (NumPy's new array: about 10 ms). Every step
of the torch path allocates its result, which is why the torch batch was the slowest way at
224 × 224 there; per-image NumPy arrays of 0.6 MiB stay small.
"""
import os
import time

import numpy as np
import torch

from lib.augmentation import ColorJitter, Compose, RandomFlip, RandomResizedCrop, resize_bilinear
from lib.data import load_photo

COLOUR_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "grace_hopper")
# (input side, output side, batch sizes): CIFAR-sized, and ImageNet-like 224 crops of 256 × 256 images
SETTINGS = [(32, 32, (64, 256, 1024)), (256, 224, (64, 256))]


def photo_batch(n: int, side: int) -> np.ndarray:
    """n images (n, 3, side, side), float32: the colour photos resized and repeated."""
    photos = [resize_bilinear(load_photo(name), (side, side)) for name in COLOUR_PHOTOS]
    return np.stack([photos[k % len(photos)] for k in range(n)]).astype(np.float32)


def best_images_per_second(augment, synchronize, n: int, min_seconds: float = 0.5) -> float:
    """n / the best time of one call, over repeats that run for at least ``min_seconds`` in all (at least 3)."""
    times, rng = [], np.random.default_rng(0)
    while len(times) < 3 or sum(times) < min_seconds:
        start = time.perf_counter()
        augment(rng)
        synchronize()
        times.append(time.perf_counter() - start)
    return n / min(times)


def ways(pipeline: Compose, x: np.ndarray) -> dict:
    """Each way of augmenting the batch x, as a function of the generator that draws for it."""
    n, hw = len(x), tuple(x.shape[2:])
    labels = np.zeros(n, dtype=np.int64)
    x_cpu = torch.from_numpy(x)
    found = {
        "NumPy per example": (lambda rng: pipeline.apply_numpy_per_example(x, labels, rng), lambda: None),
        "NumPy batch": (lambda rng: pipeline.apply_numpy(x, labels, pipeline.draw(n, hw, rng)), lambda: None),
        "torch batch, CPU": (lambda rng: pipeline.apply_torch(x_cpu, labels, pipeline.draw(n, hw, rng)), lambda: None),
    }
    if torch.cuda.is_available():
        x_gpu = x_cpu.cuda()
        found["torch batch, GPU"] = (lambda rng: pipeline.apply_torch(x_gpu, labels, pipeline.draw(n, hw, rng)),
                                     torch.cuda.synchronize)
    return found


def fresh_memory_costs(shape=(64, 3, 224, 224)) -> None:
    """Why large CPU batches can lose: one multiply by a constant on a batch of ``shape``, writing
    its result into a new array (as every step of the pipelines does) or into the input's memory."""
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    t = torch.from_numpy(x.copy())
    cases = {"NumPy, new array": lambda: x * 0.5, "NumPy, in place": lambda: np.multiply(x, 1.0, out=x),
             "torch, new tensor": lambda: t * 0.5, "torch, in place": lambda: t.mul_(1.0)}
    print(f"\none multiply on a {'×'.join(map(str, shape))} float32 batch ({x.nbytes / 2**20:.0f} MiB), best of 10:")
    for name, multiply in cases.items():
        times = []
        for _ in range(10):
            start = time.perf_counter()
            multiply()
            times.append(time.perf_counter() - start)
        print(f"  {name:<18} {1e3 * min(times):7.1f} ms")


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("THREADS", os.cpu_count())))
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, numpy {np.__version__}, GPU: {gpu}")
    print("pipeline: RandomResizedCrop(output side), RandomFlip(), ColorJitter(0.4, 0.4, 0.4); images per second\n")
    columns = ["NumPy per example", "NumPy batch", "torch batch, CPU"] + (["torch batch, GPU"] if gpu != "none" else [])
    header = f"{'input → output':<16} {'batch':>6} " + " ".join(f"{name:>18}" for name in columns)
    print(header + "\n" + "-" * len(header))
    for in_side, out_side, batch_sizes in SETTINGS:
        pipeline = Compose(RandomResizedCrop((out_side, out_side)), RandomFlip(), ColorJitter(0.4, 0.4, 0.4))
        for n in batch_sizes:
            found = ways(pipeline, photo_batch(n, in_side))
            found[columns[-1]][0](np.random.default_rng(0))            # warm-up (the GPU's first call starts kernels)
            rates = [best_images_per_second(*found[name], n) for name in columns]
            print(f"{f'{in_side}² → {out_side}²':<16} {n:>6} " + " ".join(f"{rate:>18,.0f}" for rate in rates), flush=True)
    fresh_memory_costs()
