"""Helpers for the notebooks themselves: showing the lib code a lesson calls, timing a call."""
from __future__ import annotations

import inspect
import time

from IPython.display import Code

from lib.checks import check_int


def show_source(*objects) -> Code:
    """Display the source of functions or classes from ``lib``, so the text and the code never drift apart."""
    if not objects:
        raise TypeError("show_source: expected at least one function or class")
    sources = []
    for obj in objects:
        if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismethod(obj)):
            raise TypeError(f"objects: expected functions or classes, got {type(obj).__name__}")
        sources.append(inspect.getsource(obj))
    return Code("\n\n".join(sources), language="python")


def best_seconds(run, repeats: int = 5) -> float:
    """The fastest of ``repeats`` calls of ``run()``, in seconds: the run least disturbed by other
    work on the machine. Timings still differ between machines, so cells that print them are
    tagged ``nbval-ignore-output``."""
    if not callable(run):
        raise TypeError(f"run: expected a function of no arguments, got {type(run).__name__}")
    times = []
    for _ in range(check_int("repeats", repeats, minimum=1)):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)
