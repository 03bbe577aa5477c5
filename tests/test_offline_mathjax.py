"""_ext/offline_mathjax.py, the Sphinx extension that serves MathJax from the book's own files
(the browser test checks the built book; these check the extension's rules without a build)."""
import importlib.util
from pathlib import Path

import pytest
from sphinx.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("offline_mathjax", ROOT / "_ext" / "offline_mathjax.py")
offline_mathjax = importlib.util.module_from_spec(spec)
spec.loader.exec_module(offline_mathjax)


def fake_mathjax_package(folder: Path) -> Path:
    """The layout of the npm package: LICENSE, and es5/ with components and the folders they load from."""
    build = folder / "node_modules" / "mathjax" / "es5"
    (build / "output" / "chtml" / "fonts").mkdir(parents=True)
    (build / "output" / "chtml" / "fonts" / "MathJax_Main-Regular.woff").write_bytes(b"font")
    (build / "tex-mml-chtml.js").write_text("// the component")
    (build / "tex-svg.js").write_text("// another component")
    (build.parent / "LICENSE").write_text("Apache-2.0")
    return build


def test_component_of_reads_the_file_under_the_static_folder():
    assert offline_mathjax.component_of("mathjax/tex-mml-chtml.js") == "tex-mml-chtml.js"


@pytest.mark.parametrize("path", ["https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js",
                                  "mathjax/es5/tex-mml-chtml.js", "tex-mml-chtml.js", "mathjax/"])
def test_component_of_rejects_a_cdn_or_another_folder(path):
    with pytest.raises(ConfigError, match="mathjax_path"):
        offline_mathjax.component_of(path)


def test_copy_mathjax_copies_the_component_its_folders_and_the_license_only(tmp_path):
    build = fake_mathjax_package(tmp_path)
    destination = tmp_path / "_build" / "html" / "_static" / "mathjax"
    offline_mathjax.copy_mathjax(build, "tex-mml-chtml.js", destination)
    copied = sorted(p.relative_to(destination).as_posix() for p in destination.rglob("*") if p.is_file())
    assert copied == ["LICENSE", "output/chtml/fonts/MathJax_Main-Regular.woff", "tex-mml-chtml.js"]
    offline_mathjax.copy_mathjax(build, "tex-mml-chtml.js", destination)   # an incremental build copies again


def test_a_missing_package_stops_the_build_and_says_how_to_install_it(tmp_path):
    build = offline_mathjax.mathjax_build(tmp_path)
    with pytest.raises(ConfigError, match="npm ci"):
        offline_mathjax.copy_mathjax(build, "tex-mml-chtml.js", tmp_path / "out")
    assert not (tmp_path / "out").exists()
