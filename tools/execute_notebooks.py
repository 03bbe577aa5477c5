"""Re-execute notebooks top to bottom and store their outputs, the way the book keeps them.

    python tools/execute_notebooks.py                 # every notebook under chapters/
    python tools/execute_notebooks.py chapters/normalization/02_batch_norm.ipynb

After executing, it removes what changes on every run without meaning anything (cell
timing metadata, stored widget state), merges stream chunks, and keeps only the final
state of progress-bar lines, as a terminal would show them. Prints each notebook's time.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def clean_outputs(nb) -> None:
    nb.metadata.pop("widgets", None)  # the book removes explorer outputs; stored state would pull CDN scripts
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        merged = []
        for output in cell.outputs:
            if (merged and output.output_type == "stream" and merged[-1].output_type == "stream"
                    and merged[-1].name == output.name):
                merged[-1].text += output.text
            else:
                merged.append(output)
        for output in merged:
            if output.output_type == "stream" and "\r" in output.text:
                output.text = "\n".join(line.rsplit("\r", 1)[-1] for line in output.text.split("\n"))
        cell.outputs = merged


def execute(path: Path, timeout: int = 600, write: bool = True) -> float:
    """Execute the notebook at ``path`` in its own folder; return the seconds it took."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    elapsed = time.perf_counter() - start
    if write:
        clean_outputs(nb)
        nbformat.write(nb, path)
    return elapsed


def all_notebooks() -> list[Path]:
    return sorted(p for p in (ROOT / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


if __name__ == "__main__":
    paths = [Path(p).resolve() for p in sys.argv[1:]] or all_notebooks()
    for path in paths:
        print(f"{execute(path):6.1f} s  {path.relative_to(ROOT)}", flush=True)
