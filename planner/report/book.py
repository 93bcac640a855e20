"""The report pipeline's last two steps: execute the notebooks with papermill, then build the book.

Notebooks live in ``notebooks/`` as jupytext MyST Markdown; each is converted in memory and executed
with papermill into ``results/<preset>/notebooks/<name>.ipynb``. A notebook is skipped when its
output is newer than every input it depends on (its source, the ``planner`` package, the configs
and the preset's profiles and evaluation tables) and was run with the same parameters.

The committed ``_toc.yml`` / ``_config.yml`` describe the full study and build in place (the config
with the repository's address filled in, :mod:`planner.report.repository`). Any other preset is staged
under ``_build/stage/<preset>/`` with a toc pointing at that preset's executed notebooks and a config
whose title and banner label it as a quick run; ``jupyter-book build`` is given both, and the HTML is
copied to ``_build/html`` either way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from planner import config
from planner.paths import REPO_ROOT, results_dir
from planner.report import repository

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
BOOK_TOC = REPO_ROOT / "_toc.yml"
BOOK_CONFIG = REPO_ROOT / "_config.yml"
BUILD_DIR = REPO_ROOT / "_build"
COMMITTED_PRESET = "full"
KERNEL_NAME = "python3"
# Inputs every notebook depends on besides its own source (relative to the repo root).
SHARED_INPUTS = ("planner", "configs")
# Inputs inside results/<preset>/ (produced by profile and evaluate).
RESULT_INPUTS = ("profiles", "eval")


# Warning filters for the notebook kernel (PYTHONWARNINGS syntax; a message prefix, since a category in
# another module cannot be named there). tqdm.auto warns on import inside a kernel without ipywidgets,
# with the absolute path of the environment; it says nothing about the results and made every executed
# notebook machine-dependent (issue #17: nbval failed on it in 10 cells).
KERNEL_WARNING_FILTERS = ("ignore:IProgress not found",)
# nbval's sanitize file: the same normalisation applied to committed and re-executed outputs.
NBVAL_SANITIZE = REPO_ROOT / "nbval_sanitize.cfg"


class ReportError(RuntimeError):
    """A notebook failed to execute or the book failed to build (the message says which and where)."""


@dataclass(frozen=True)
class NotebookRun:
    name: str
    status: str  # "executed" | "skipped"
    seconds: float
    output: Path


def notebook_sources(only: Iterable[str] | None = None) -> list[Path]:
    """The jupytext notebooks in ``notebooks/``, sorted; ``only`` selects by stem (e.g. ``03_evaluate``)."""
    sources = sorted(NOTEBOOK_DIR.glob("*.md"))
    if only:
        wanted = list(only)
        by_name = {p.stem: p for p in sources}
        unknown = [w for w in wanted if w not in by_name]
        if unknown:
            raise ValueError(f"unknown notebook(s) {unknown}; known: {sorted(by_name)}")
        sources = [by_name[w] for w in wanted]
    if not sources:
        raise FileNotFoundError(f"no notebooks (*.md) in {NOTEBOOK_DIR}")
    return sources


def output_dir(preset: str) -> Path:
    """``results/<preset>/notebooks/``."""
    path = results_dir(preset) / "notebooks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def parameters(preset: str, task: str = "all", seeds: Sequence[int] | None = None) -> dict:
    """Papermill parameters shared by every notebook (validated here so a typo fails before a kernel starts)."""
    config.preset(preset)
    if task != "all":
        config.validate_task(task)
    return {"preset": preset, "task": task, "seeds": [int(s) for s in seeds] if seeds else None}


def _newest_mtime(paths: Iterable[Path]) -> float:
    newest = 0.0
    for path in paths:
        if path.is_file():
            newest = max(newest, path.stat().st_mtime)
        elif path.is_dir():
            for sub in path.rglob("*"):
                if sub.is_file() and "__pycache__" not in sub.parts:
                    newest = max(newest, sub.stat().st_mtime)
    return newest


def input_paths(source: Path, preset: str) -> list[Path]:
    """What a notebook's output depends on: its source, the package, the configs and the preset's results."""
    root = results_dir(preset)
    return [source, *(REPO_ROOT / p for p in SHARED_INPUTS), *(root / p for p in RESULT_INPUTS)]


def _recorded_parameters(output: Path) -> dict | None:
    import nbformat

    try:
        nb = nbformat.read(output, as_version=4)
    except Exception:  # unreadable output: treat as stale
        return None
    return dict(nb.metadata.get("papermill", {}).get("parameters", {}) or {})


def is_stale(source: Path, output: Path, preset: str, params: dict) -> bool:
    """True when ``output`` is missing, older than an input, or was run with other parameters."""
    if not output.exists():
        return True
    if output.stat().st_mtime < _newest_mtime(input_paths(source, preset)):
        return True
    return _recorded_parameters(output) != params


def _tidy_for_book(nb) -> None:
    """Hide papermill's injected-parameters cell in the book (the parameters are in the metadata)."""
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")


@contextlib.contextmanager
def kernel_environment() -> Iterator[None]:
    """Environment of a kernel papermill starts: :data:`KERNEL_WARNING_FILTERS` added to PYTHONWARNINGS."""
    old = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = ",".join([*(old.split(",") if old else []), *KERNEL_WARNING_FILTERS])
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = old


def machine_paths() -> list[tuple[str, str]]:
    """``(absolute prefix, placeholder)`` pairs of this machine, longest first: the environment's
    site-packages, the standard library, the repository and the home folder."""
    pairs = {sysconfig.get_paths()["purelib"]: "<site-packages>", sysconfig.get_paths()["platlib"]: "<site-packages>",
             sysconfig.get_paths()["stdlib"]: "<stdlib>", str(REPO_ROOT): ".", str(Path.home()): "~"}
    return sorted(((k.rstrip("/"), v) for k, v in pairs.items() if len(k.rstrip("/")) > 1),
                  key=lambda kv: -len(kv[0]))


def strip_machine_paths(text: str, pairs: Sequence[tuple[str, str]] | None = None) -> str:
    """``text`` with every absolute path prefix of this machine replaced by its placeholder."""
    for prefix, placeholder in (machine_paths() if pairs is None else pairs):
        text = text.replace(prefix + "/", placeholder + "/")
    return text


def _machine_independent(nb) -> None:
    """Rewrite this machine's absolute paths in text outputs (warnings name the file that raised them),
    so a committed notebook is the same wherever it was executed."""
    pairs = machine_paths()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                out["text"] = strip_machine_paths(out.get("text", ""), pairs)
            elif out.get("output_type") == "error":
                out["traceback"] = [strip_machine_paths(line, pairs) for line in out.get("traceback", [])]
            for mime, value in (out.get("data") or {}).items():
                if mime.startswith("text/") or mime.endswith(("text/plain", "text/html", "text/markdown")):
                    out["data"][mime] = strip_machine_paths(value if isinstance(value, str) else "".join(value), pairs)


def execute_notebook(source: Path, output: Path, params: dict, kernel_name: str = KERNEL_NAME) -> None:
    """Convert ``source`` with jupytext and execute it with papermill into ``output``.

    The kernel runs in the repo root and inherits this process's environment (so
    ``PLANNER_RESULTS_DIR`` and the offline flags apply inside it).
    """
    import jupytext
    import nbformat
    import papermill

    nb = jupytext.read(source)
    if not any("parameters" in c.metadata.get("tags", []) for c in nb.cells):
        raise ReportError(f"{source}: no cell tagged 'parameters'; papermill could not inject {sorted(params)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_suffix(".partial.ipynb")
    try:
        with kernel_environment():
            executed = papermill.execute_notebook(nb, str(partial), parameters=params, kernel_name=kernel_name,
                                                  cwd=str(REPO_ROOT), progress_bar=False, log_output=False)
    except papermill.PapermillExecutionError as exc:
        raise ReportError(f"{source.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue} "
                          f"(partial output kept in {partial})") from None
    _tidy_for_book(executed)
    _machine_independent(executed)
    record = executed.metadata.get("papermill")
    if record is not None:  # papermill notes where it wrote: the partial file, by this machine's absolute path
        record["output_path"] = strip_machine_paths(str(output))
        if isinstance(record.get("input_path"), str):
            record["input_path"] = strip_machine_paths(record["input_path"])
    nbformat.write(executed, str(partial))
    os.replace(partial, output)  # atomic: a killed run never leaves a half-written output behind


def stderr_lines(output: Path) -> list[str]:
    """Distinct stderr lines an executed notebook printed (the book hides stderr; the CLI lists it)."""
    import nbformat

    nb = nbformat.read(output, as_version=4)
    lines: list[str] = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                lines.extend(line for line in out.get("text", "").splitlines() if line.strip())
    return list(dict.fromkeys(lines))


def execute_all(preset: str, force: bool = False, only: Iterable[str] | None = None, task: str = "all",
                seeds: Sequence[int] | None = None, kernel_name: str = KERNEL_NAME,
                progress: bool = True) -> list[NotebookRun]:
    """Execute every (or the selected) notebook for ``preset``; skip up-to-date outputs unless ``force``."""
    from tqdm import tqdm

    params = parameters(preset, task, seeds)
    runs = []
    sources = notebook_sources(only)
    bar = tqdm(sources, desc=f"notebooks ({preset})", unit="nb", disable=not progress)
    for source in bar:
        output = output_dir(preset) / f"{source.stem}.ipynb"
        bar.set_postfix_str(source.stem)
        start = time.perf_counter()
        if not force and not is_stale(source, output, preset, params):
            runs.append(NotebookRun(source.stem, "skipped", 0.0, output))
            continue
        execute_notebook(source, output, params, kernel_name)
        runs.append(NotebookRun(source.stem, "executed", time.perf_counter() - start, output))
    return runs


# ------------------------------------------------------------------ book

def _load_yaml(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"missing {path}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a mapping at the top level")
    return data


def _retarget(node, old: str, new: str):
    """Replace the ``results/<old>/`` prefix of every toc ``file`` entry."""
    if isinstance(node, dict):
        return {k: (v.replace(f"results/{old}/", f"results/{new}/", 1) if k in ("file", "root") and isinstance(v, str)
                    else _retarget(v, old, new)) for k, v in node.items()}
    if isinstance(node, list):
        return [_retarget(v, old, new) for v in node]
    return node


def toc_entries(toc: dict) -> list[str]:
    """Every document path named by a toc (root first)."""
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("file", "root") and isinstance(v, str):
                    found.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc)
    return found


def _stage_root(preset: str) -> Path:
    return BUILD_DIR / "stage" / preset


def _staged(preset: str) -> bool:
    """The committed full study builds in place; anything else builds from a staging copy."""
    return not (preset == COMMITTED_PRESET and results_dir(preset).resolve() == (REPO_ROOT / "results" / preset).resolve())


def book_inputs(preset: str, repository_url: str | None = None) -> tuple[Path, Path, Path]:
    """``(book root, toc, config)`` to build ``preset``'s book from.

    The full study builds in the repo root from the committed toc, with the committed config plus the
    repository settings (:func:`planner.report.repository.with_repository`: buttons on only when
    ``repository_url`` is given) written to ``_build/config/<preset>/_config.yml``. Any other preset (or a
    results folder moved by ``PLANNER_RESULTS_DIR``) is staged under ``_build/stage/<preset>/``: the prose
    chapters, the bibliography, that preset's executed notebooks at ``results/<preset>/notebooks/``, a
    toc pointing there and a config whose title and banner say which run it is.
    """
    cfg = repository.with_repository(_load_yaml(BOOK_CONFIG), repository_url)
    if not _staged(preset):
        cfg_path = BUILD_DIR / "config" / preset / "_config.yml"
        cfg_path.parent.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return REPO_ROOT, BOOK_TOC, cfg_path
    config.preset(preset)
    toc = _retarget(_load_yaml(BOOK_TOC), COMMITTED_PRESET, preset)
    if preset != COMMITTED_PRESET:
        cfg["title"] = f"{cfg.get('title', 'Report')} ({preset} run)"
        cfg.setdefault("html", {})["announcement"] = (
            f"This is a <b>{preset}</b> run: small models, few requests and seeds, for smoke testing. "
            f"Its numbers are not the study; the committed results are those of the full preset.")
    # the staging root holds only this preset's documents; exclusions of other presets' folders go
    cfg["exclude_patterns"] = [p for p in cfg.get("exclude_patterns", []) if not p.startswith("results/")]
    root = _stage_root(preset)
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(REPO_ROOT / "book", root / "book")
    for name in cfg.get("bibtex_bibfiles", []):
        shutil.copy2(REPO_ROOT / name, root / name)
    notebooks = output_dir(preset)
    shutil.copytree(notebooks, root / "results" / preset / "notebooks",
                    ignore=shutil.ignore_patterns("*.partial.ipynb"))
    toc_path, cfg_path = root / "_toc.yml", root / "_config.yml"
    toc_path.write_text(yaml.safe_dump(toc, sort_keys=False))
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root, toc_path, cfg_path


def missing_documents(root: Path, toc_path: Path) -> list[str]:
    """Toc entries with no source file (``.md``, ``.ipynb``) under the book root."""
    missing = []
    for entry in toc_entries(_load_yaml(toc_path)):
        base = root / entry
        if not any(Path(f"{base}{s}").exists() for s in ("", ".md", ".ipynb")) or base.is_dir():
            missing.append(entry)
    return missing


def build_book(preset: str, warnings_as_errors: bool = True, repository_url: str | None = None) -> Path:
    """``jupyter-book build`` of ``preset``'s book; the HTML always ends up in ``_build/html``.

    The repository and issue buttons link to ``repository_url``, else ``$PLANNER_REPOSITORY_URL``, else
    the ``origin`` remote's web address (:func:`planner.report.repository.repository_url`); none: no buttons.
    """
    root, toc_path, cfg_path = book_inputs(preset, repository.repository_url(repository_url))
    missing = missing_documents(root, toc_path)
    if missing:
        raise ReportError(f"the {preset} book names documents that do not exist yet: {missing}; "
                          f"execute the notebooks first (`python -m planner report --preset {preset}`)")
    html = BUILD_DIR / "html"
    if html.exists():  # never leave another preset's pages beside this build's
        shutil.rmtree(html)
    command = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(root),
               "--toc", str(toc_path), "--config", str(cfg_path), "--all"]
    if warnings_as_errors:
        command += ["-W", "--keep-going"]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise ReportError(f"jupyter-book build failed ({preset}):\n{tail}")
    if root != REPO_ROOT:
        shutil.copytree(root / "_build" / "html", html)
    index = html / "index.html"
    if not index.exists():
        raise ReportError(f"jupyter-book reported success but {index} is missing")
    return index
