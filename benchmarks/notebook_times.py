"""Each notebook's execution time on this machine (the book's budget: 60 s on a 2-core CPU).

    python benchmarks/notebook_times.py

Executes every notebook in a kernel, as nbval does, without writing anything back.
"""
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from execute_notebooks import ROOT, all_notebooks, execute  # noqa: E402

BUDGET_S = 60

if __name__ == "__main__":
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores\n")
    print(f"{'notebook':<55} {'seconds':>8}  within {BUDGET_S} s")
    total = 0.0
    for path in all_notebooks():
        seconds = execute(path, write=False)
        total += seconds
        print(f"{str(path.relative_to(ROOT)):<55} {seconds:8.1f}  {'yes' if seconds <= BUDGET_S else 'NO'}", flush=True)
    print(f"{'total':<55} {total:8.1f}")
