"""The same float rounding on every x86-64 CPU: the settings behind the book's stored outputs.

A float32 training run is a long chain of roundings, and training amplifies the smallest
difference: the same seed printed a validation accuracy of 0.365 on one machine and 0.400
on another. The differences come from choices the numerical libraries make *by CPU*:

- torch's own kernels (element-wise ops, reductions, softmax, the optimizers) come in a
  default, an AVX2 and an AVX-512 build, picked at import from the CPU;
- MKL, torch's matrix multiply on x86, picks its code path by CPU as well;
- OpenBLAS, NumPy's matrix multiply, picks its kernels by CPU;
- NumPy's own ``exp``, ``tanh``, ``log`` ... have AVX2 and AVX-512 versions;
- every multi-threaded reduction splits its sum by the number of threads, which is the
  number of cores unless told otherwise.

Each of these can be pinned by an environment variable that the library reads when it is
loaded. ``CPU_SETTINGS`` pins them all to one choice that every x86-64 CPU with AVX2 runs.
``pin_cpu_numerics()`` sets them; every notebook calls it in its setup cell (its first code cell), before NumPy
and torch are imported, so the notebook executor, nbval, CI and a reader's own Jupyter
all compute with the same roundings. ``benchmarks/cpu_numerics.py`` shows what each
setting changes and what it costs.

This module imports neither NumPy nor torch, on purpose: it must run before they load.
On a GPU none of this applies; CUDA kernels round in their own ways.
"""
from __future__ import annotations

import os
import sys
import warnings

CPU_SETTINGS = {
    # torch's kernels: the portable build on every CPU instead of the AVX2 or AVX-512 variant.
    "ATEN_CPU_CAPABILITY": "default",
    # MKL's conditional numerical reproducibility. COMPATIBLE is its one branch that gives the
    # same results on Intel and AMD CPUs alike; with any other branch, a non-Intel CPU falls back
    # to AUTO. (Measured: with "AVX2", an AMD AVX2 and an Intel AVX-512 machine still trained to
    # different weights.) It costs about 3x on a matrix product; the book's networks are small.
    "MKL_CBWR": "COMPATIBLE",
    # oneDNN (torch's convolutions): no instructions beyond AVX2.
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    # OpenBLAS (NumPy's matrix multiply): the AVX2 (Haswell) kernels on every CPU.
    "OPENBLAS_CORETYPE": "Haswell",
    # NumPy's own vectorized loops: never the AVX-512 versions.
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    # One thread everywhere: a reduction split over n threads adds in an order that depends on n.
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}

_NUMERIC_MODULES = ("numpy", "torch")


def cpu_numerics_pinned() -> bool:
    """True when this process's environment holds every value of ``CPU_SETTINGS``."""
    return all(os.environ.get(name) == value for name, value in CPU_SETTINGS.items())


def pin_cpu_numerics() -> None:
    """Set ``CPU_SETTINGS`` in this process's environment (overriding what was there).

    ``DLBOOK_CPU_NATIVE=1`` in the environment turns this off, for a reader who prefers this
    machine's fastest kernels to the book's exact digits.

    Call it before NumPy or torch is imported: the libraries read these variables once,
    when they load. If they are already loaded and the settings were not in force, this
    warns that the kernel must be restarted for the book's exact numbers.
    """
    if os.environ.get("DLBOOK_CPU_NATIVE") == "1" or cpu_numerics_pinned():
        return  # DLBOOK_CPU_NATIVE=1: the reader chose this machine's own (faster, different) kernels
    loaded = [name for name in _NUMERIC_MODULES if name in sys.modules]
    os.environ.update(CPU_SETTINGS)
    if loaded:
        warnings.warn(
            f"pin_cpu_numerics: {', '.join(loaded)} already loaded, so the CPU settings apply only "
            "after a restart. Restart the kernel and run this cell first to print the book's exact numbers.",
            RuntimeWarning,
            stacklevel=2,
        )
