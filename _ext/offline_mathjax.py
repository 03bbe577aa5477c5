"""Serve MathJax from the book's own files, so that the HTML book works with no network.

Sphinx's mathjax extension loads ``mathjax_path``, and a relative path there is a file under
the built book's ``_static``. _config.yml names one of MathJax's components there
(``mathjax/tex-mml-chtml.js``); this extension puts it in place, from the npm package that
package-lock.json pins (``npm ci``, which ``make setup`` runs), together with the folders the
component loads from on demand: its fonts, TeX extensions such as ``\\boldsymbol``'s, and what
the reader's MathJax menu can switch on (accessibility, SVG output). Without the package the
build stops and says how to install it: it never falls back to a CDN.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from sphinx.errors import ConfigError, ExtensionError

STATIC_FOLDER = "mathjax"   # the folder under _static; mathjax_path starts with it


def mathjax_build(srcdir: str | Path) -> Path:
    """MathJax's browser build in the npm package installed beside the book."""
    return Path(srcdir) / "node_modules" / "mathjax" / "es5"


def component_of(mathjax_path: str) -> str:
    """The component file that ``mathjax_path`` (``mathjax/<component>.js``) names."""
    folder, _, component = mathjax_path.partition("/")
    if folder != STATIC_FOLDER or not component.endswith(".js") or "/" in component:
        raise ConfigError(f"mathjax_path: expected '{STATIC_FOLDER}/<component>.js', a component of "
                          f"MathJax's es5 build served from the book's _static folder, got {mathjax_path!r}")
    return component


def copy_mathjax(build: Path, component: str, destination: Path) -> None:
    """Copy ``component``, the folders it loads from and MathJax's license from ``build`` to ``destination``."""
    if not (build / component).is_file():
        raise ConfigError(f"MathJax's {component} is not in {build}: the book serves MathJax from its own "
                          "files, installed from package-lock.json by `npm ci` (or `make setup`) in the "
                          "book's folder. Install Node.js's npm if it is missing.")
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy2(build / component, destination / component)
    shutil.copy2(build.parent / "LICENSE", destination / "LICENSE")   # Apache-2.0 asks for it beside copies
    for folder in build.iterdir():
        if folder.is_dir():
            shutil.copytree(folder, destination / folder.name, dirs_exist_ok=True)


def install_mathjax_files(app) -> None:
    if app.builder.format != "html":
        return
    component = component_of(app.config.mathjax_path)
    copy_mathjax(mathjax_build(app.srcdir), component, Path(app.outdir) / "_static" / STATIC_FOLDER)


CONFIG_FILE = "config.js"   # MathJax's configuration, under the same folder


def defer_mathjax_config(app, pagename, templatename, context, doctree) -> None:
    """Give MathJax its configuration from a deferred script just before MathJax's own, not inline.

    Why: Sphinx writes the configuration inline in the page head (``window.MathJax = {...}``), so
    ``window.MathJax`` exists while the page is parsed, long before the deferred MathJax script
    replaces it. jupyterquiz's script sees it, waits 500 ms and reads ``MathJax.version``; when
    MathJax has not loaded by then (a slow load), that is undefined and reading it throws
    "Cannot read properties of undefined (reading '0')". With the configuration deferred too,
    ``window.MathJax`` does not exist while the inline scripts run: jupyterquiz skips its own
    typesetting, and MathJax typesets the whole page, the quizzes included, when it starts.
    Deferred scripts run in document order, so the configuration is in place before MathJax loads.
    """
    scripts = context.get("script_files")
    if not scripts:
        return
    inline = [script for script in scripts
              if not script.filename and str(script.attributes.get("body", "")).startswith("window.MathJax = ")]
    if not inline:
        return   # a page without equations gets no MathJax at all
    config_file = Path(app.outdir) / "_static" / STATIC_FOLDER / CONFIG_FILE
    body = inline[0].attributes["body"]
    if not config_file.exists() or config_file.read_text() != body:
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(body)
    for script in inline:
        scripts.remove(script)
    app.builder.add_js_file(f"{STATIC_FOLDER}/{CONFIG_FILE}", defer="defer")   # appended at the end...
    config_script = scripts.pop()
    # Sphinx stores MathJax's file as "_static/" + mathjax_path
    mathjax = [index for index, script in enumerate(scripts)
               if os.fspath(script.filename or "").endswith(app.config.mathjax_path)]
    if len(mathjax) != 1:
        raise ExtensionError(f"offline_mathjax: expected one MathJax script on {pagename}, found {len(mathjax)}")
    scripts.insert(mathjax[0], config_script)                                  # ...moved just before MathJax


def setup(app):
    app.connect("builder-inited", install_mathjax_files)
    app.connect("html-page-context", defer_mathjax_config, priority=600)   # after sphinx.ext.mathjax adds its scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}
