"""Seeding and device selection: the two lines every experiment starts with."""
from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch

from lib.checks import check_int


def set_seed(seed: int = 0) -> np.random.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a rerun prints the same numbers.

    Returns a NumPy ``Generator`` seeded with ``seed``, for code that prefers an explicit one.
    Also asks torch for deterministic algorithms where they exist (``warn_only`` keeps
    operations without a deterministic variant usable on a GPU).
    """
    check_int("seed", seed, minimum=0)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    _use_deterministic_algorithms()
    torch.backends.cudnn.benchmark = False
    return np.random.default_rng(seed)


def _use_deterministic_algorithms() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)``, without its import cost.

    The public call also sets the flag of torch's compiler (``torch._inductor.config``), and
    importing the compiler costs about 2.5 s of CPU, once per notebook. The book never compiles a
    model, so unless the compiler is loaded already, only torch's own flag (the one the public
    call sets for eager kernels) is set. Code that compiles later should call the public function.
    """
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=True)


def get_device(prefer: str | None = None) -> torch.device:
    """The device to train on: ``cuda`` when a GPU is available, else ``cpu``.

    ``prefer="cpu"`` forces the CPU (for example to reproduce the book's stored outputs
    exactly); ``prefer="cuda"`` raises if no GPU is present.
    """
    if prefer is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if prefer not in ("cpu", "cuda"):
        raise ValueError(f"prefer: expected None, 'cpu' or 'cuda', got {prefer!r}")
    if prefer == "cuda" and not torch.cuda.is_available():
        raise ValueError("prefer: 'cuda' was asked for, but torch sees no CUDA device")
    return torch.device(prefer)


def tune_for_small_models(device: torch.device) -> None:
    """On a CPU, run torch on one thread. For the book's small networks, starting and
    synchronizing threads costs more than it saves (about 20% faster on a 2-core machine).
    On a GPU nothing changes."""
    if not isinstance(device, torch.device):
        raise TypeError(f"device: expected a torch.device, got {type(device).__name__}")
    if device.type == "cpu":
        torch.set_num_threads(1)
