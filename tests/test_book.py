"""The book's conventions, checked on the stored notebooks (no execution, no build):
every notebook is in the table of contents, starts with the Colab setup cell for the
repository and branch named in _config.yml that then pins the CPU's float rounding, states
learning objectives, is stored executed top to bottom without errors, gives every figure alt text, and each chapter has a quiz
of at least 8 questions and at least 3 exercises with solutions."""
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from lib.quiz import load_questions

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
NOTEBOOKS = sorted(p for p in (ROOT / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
CHAPTERS = sorted({p.parent for p in NOTEBOOKS})
ALLOWED_TAGS = {"colab-setup", "nbval-ignore-output", "remove-input", "remove-output", "hide-input", "hide-output"}


def toc_files(entries):
    for entry in entries:
        if "file" in entry:
            yield entry["file"]
        for key in ("chapters", "sections", "parts"):
            yield from toc_files(entry.get(key, []))


def read(path):
    return nbformat.read(path, as_version=4)


def test_the_toc_lists_every_notebook_and_nothing_missing():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = set(toc_files(toc.get("parts", []) + toc.get("chapters", [])))
    notebooks = {p.relative_to(ROOT).with_suffix("").as_posix() for p in NOTEBOOKS}
    assert notebooks <= listed, f"notebooks not in _toc.yml: {sorted(notebooks - listed)}"
    for entry in listed | {toc["root"]}:
        assert any((ROOT / f"{entry}{suffix}").exists() for suffix in (".md", ".ipynb")), entry


def test_the_book_shows_stored_outputs():
    assert CONFIG["execute"]["execute_notebooks"] == "off"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_setup_cell_follows_the_title_and_installs_lib_on_colab_from_the_configured_repository(path):
    # The title, introduction and objectives come first (the top of the HTML page), then the
    # setup cell, before any other code.
    cells = read(path).cells
    setup = cells[1]
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
    url, branch = CONFIG["repository"]["url"], CONFIG["repository"]["branch"]
    assert setup.cell_type == "code" and "colab-setup" in setup.metadata.get("tags", [])
    assert '"google.colab" in sys.modules' in setup.source
    assert f"git+{url}@{branch}" in setup.source
    assert "torch" not in setup.source, "the Colab cell must keep Colab's own torch"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_setup_cell_pins_the_cpu_numerics_before_numpy_or_torch_load(path):
    setup = next(c for c in read(path).cells if c.cell_type == "code").source
    assert setup.rstrip().endswith("pin_cpu_numerics()"), "the setup cell must end by pinning (lib.reproducible)"
    assert "numpy" not in setup and "import torch" not in setup


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_a_title_and_learning_objectives(path):
    markdown = [c.source for c in read(path).cells if c.cell_type == "markdown"]
    assert markdown[0].startswith("# ")
    assert "**Learning objectives**" in markdown[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_executed_top_to_bottom_without_errors(path):
    code = [c for c in read(path).cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"re-run {path.name} top to bottom and save it"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name} stores an error output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_figure_has_alt_text_and_tags_are_known(path):
    for index, cell in enumerate(read(path).cells):
        if cell.cell_type != "code":
            continue
        assert set(cell.metadata.get("tags", [])) <= ALLOWED_TAGS, f"cell {index}: unknown tag"
        has_image = any("image/png" in o.get("data", {}) for o in cell.outputs)
        if has_image and "remove-output" not in cell.metadata.get("tags", []):
            alt = cell.metadata.get("mystnb", {}).get("image", {}).get("alt", "")
            assert len(alt) > 20, f"cell {index} of {path.name} draws a figure without alt text"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_widget_state_is_stored(path):
    # Stored widget state makes the HTML book load the widget manager from a CDN; the
    # explorers' outputs are removed from the book, so the state is dead weight.
    assert "widgets" not in read(path).metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_cited_papers_are_listed_at_the_end(path):
    markdown = "\n".join(c.source for c in read(path).cells if c.cell_type == "markdown")
    if "{footcite" in markdown:
        assert "{footbibliography}" in markdown
    bib = (ROOT / "references.bib").read_text()
    for key in re.findall(r"\{(?:foot)?cite(?::[pt])?\}`([^`]+)`", markdown):
        for single in key.split(","):
            assert f"{{{single.strip()}," in bib, f"{single} is cited but not in references.bib"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_each_chapter_has_a_quiz_and_exercises_with_solutions(chapter):
    cells = [c for p in sorted(chapter.glob("*.ipynb")) for c in read(p).cells]
    quiz_calls = re.findall(r'show_quiz\("([^"]+)"\)', "\n".join(c.source for c in cells if c.cell_type == "code"))
    assert quiz_calls, f"chapter {chapter.name} shows no quiz"
    assert sum(len(load_questions(name)) for name in quiz_calls) >= 8
    markdown = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    exercises = re.findall(r"```\{exercise\}\n:label: (\S+)", markdown)
    # a plain solution, or a gated one (solution-start ... solution-end) around executed code cells
    solutions = re.findall(r"```\{solution(?:-start)?\} (\S+)\n:class: dropdown", markdown)
    assert len(exercises) >= 3 and sorted(exercises) == sorted(solutions)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_asserts_back_the_claims(path):
    """Every lesson notebook (all but the quiz page) asserts what it demonstrates."""
    code = "\n".join(c.source for c in read(path).cells if c.cell_type == "code")
    if "show_quiz" not in code:
        assert code.count("assert ") >= 3, f"{path.name} makes claims that no assert holds"
