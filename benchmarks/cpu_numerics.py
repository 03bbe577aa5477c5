"""Which environment settings make results independent of the CPU, and what each costs.

    python benchmarks/cpu_numerics.py              # the identity table (about 2 minutes)
    python benchmarks/cpu_numerics.py --notebooks  # also each setting's cost in notebook time

One machine cannot run on another CPU, so it emulates two: each "machine" is a choice the
libraries would otherwise make from the hardware (torch's kernel build, MKL's code path,
OpenBLAS's kernels, NumPy's vector loops, the number of threads). A candidate setting
overrides some of those choices. It makes results CPU-independent when both emulated
machines then produce bit-identical numbers: the weights after a float32 training run and
the results of a few NumPy kernels, compared by hash.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lib.reproducible import CPU_SETTINGS  # noqa: E402  (imports neither NumPy nor torch)

# Two machines as the libraries would see them. Machine B takes another code path of each
# library that this CPU can run: a real AVX-512 machine differs in the same places. (MKL:
# machine A takes MKL's automatic choice; on an AMD CPU every named branch but COMPATIBLE
# falls back to it, so B takes the AVX path, which an Intel CPU would run for real.)
MACHINE_A = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AUTO", "OPENBLAS_CORETYPE": "Zen",
             "NPY_DISABLE_CPU_FEATURES": "", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2",
             "OPENBLAS_NUM_THREADS": "2"}
MACHINE_B = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AVX", "OPENBLAS_CORETYPE": "Sandybridge",
             "NPY_DISABLE_CPU_FEATURES": "X86_V3", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "OPENBLAS_NUM_THREADS": "1"}
THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CANDIDATES = {
    "nothing pinned": (),
    "ATEN_CPU_CAPABILITY": ("ATEN_CPU_CAPABILITY",),
    "MKL_CBWR": ("MKL_CBWR",),
    "threads = 1": THREADS,
    "OPENBLAS_CORETYPE": ("OPENBLAS_CORETYPE",),
    "NPY_DISABLE_CPU_FEATURES": ("NPY_DISABLE_CPU_FEATURES",),
    "torch's three (ATen, MKL, threads)": ("ATEN_CPU_CAPABILITY", "MKL_CBWR", *THREADS),
    "all of CPU_SETTINGS": tuple(CPU_SETTINGS),
}
HEAVY_NOTEBOOKS = ["chapters/normalization/04_bn_experiment.ipynb", "chapters/initialization/01_vanishing_exploding.ipynb"]


def probe() -> dict:
    """Run in a subprocess: hashes of a float32 and a float64 training run and of NumPy kernels."""
    import numpy as np
    import torch

    def digest(array):
        return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()[:10]

    def train(dtype):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(2000, 40, generator=generator, dtype=dtype)
        y = torch.tanh(x @ torch.randn(40, 10, generator=generator, dtype=dtype)).argmax(1)
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(40, 100), torch.nn.BatchNorm1d(100), torch.nn.ReLU(),
                                    torch.nn.Linear(100, 100), torch.nn.Sigmoid(), torch.nn.Linear(100, 10)).to(dtype)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        for _ in range(300):
            index = torch.randint(0, 2000, (60,), generator=generator)
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return digest(torch.cat([p.detach().flatten() for p in model.parameters()]).numpy())

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((600, 600)), rng.standard_normal((600, 600))
    return {
        "torch float32 training": train(torch.float32),
        "torch float64 training": train(torch.float64),
        "NumPy matmul": digest(a @ b),
        "NumPy exp, tanh, log": digest(np.exp(a / 3) + np.tanh(b) + np.log1p(np.abs(a))),
    }


def run_probe(machine: dict, pinned: tuple) -> dict:
    env = {**os.environ, **machine, **{name: CPU_SETTINGS[name] for name in pinned}}
    output = subprocess.run([sys.executable, __file__, "--probe"], env=env, capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def notebook_seconds(pinned: tuple) -> float:
    sys.path.insert(0, str(ROOT / "tools"))
    from execute_notebooks import execute

    saved = dict(os.environ)
    os.environ.update(MACHINE_A)
    os.environ.update({name: CPU_SETTINGS[name] for name in pinned})
    os.environ["DLBOOK_CPU_NATIVE"] = "1"  # measure this candidate alone, not the notebooks' own full pin
    try:
        return sum(execute(ROOT / path, write=False) for path in HEAVY_NOTEBOOKS)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main(with_notebooks: bool) -> None:
    columns = ["torch float32 training", "torch float64 training", "NumPy matmul", "NumPy exp, tanh, log"]
    print("Identical on both emulated machines?" + (f"  Cost: seconds for {len(HEAVY_NOTEBOOKS)} notebooks." if with_notebooks else ""))
    print(f"{'pinned':<36}" + "".join(f"{c:>24}" for c in columns) + ("   notebooks s" if with_notebooks else ""))
    for name, pinned in CANDIDATES.items():
        a, b = run_probe(MACHINE_A, pinned), run_probe(MACHINE_B, pinned)
        cost = f"{notebook_seconds(pinned):14.1f}" if with_notebooks else ""
        print(f"{name:<36}" + "".join(f"{'yes' if a[c] == b[c] else 'no':>24}" for c in columns) + cost, flush=True)


if __name__ == "__main__":
    if "--probe" in sys.argv:
        print(json.dumps(probe()))
    else:
        main(with_notebooks="--notebooks" in sys.argv)
