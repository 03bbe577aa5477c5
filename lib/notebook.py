"""Helpers for the notebooks themselves: showing the lib code a lesson calls."""
from __future__ import annotations

import inspect

from IPython.display import Code


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
