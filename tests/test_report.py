"""The report machinery: notebooks, toc, staleness, key results, README table and figures (fast)."""

from __future__ import annotations

import ast
import os
import re
import time

import jupytext
import numpy as np
import pandas as pd
import pytest
import yaml

from planner.schema import SchemaError
from planner.tables import refresh_manifest
from planner.evaluation import ablation
from planner.analysis import plots, results
from planner.plan import registry
from planner.report import book as report
from planner.cli import main
from planner.commands import readme
from planner.paths import REPO_ROOT, results_dir

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.md"))
REQUIRED_NOTEBOOKS = ["01_profile_latency", "02_profile_accuracy", "03_evaluate", "04_ablations", "05_workloads",
                      "06_failures", "07_statistics", "08_theory", "09_simulator_validation"]


def test_every_required_notebook_exists():
    assert [n for n in REQUIRED_NOTEBOOKS if not (REPO_ROOT / "notebooks" / f"{n}.md").exists()] == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_papermill_ready(path):
    nb = jupytext.read(path)
    assert nb.metadata["kernelspec"]["name"] == "python3", f"{path.name}: kernel must be python3"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    for name in ("preset", "task", "seeds"):
        assert f"{name} =" in tagged[0].source, f"{path.name}: parameters cell lacks {name!r}"
    assert 'preset = "quick"' in tagged[0].source, f"{path.name}: default preset must be quick"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.lstrip().startswith("# "), \
        f"{path.name}: must start with a level-1 title"


def test_committed_toc_names_existing_sources_and_every_notebook():
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    entries = report.toc_entries(toc)
    named = set()
    for entry in entries:
        if entry.startswith("results/full/notebooks/"):
            stem = entry.rsplit("/", 1)[1]
            assert (REPO_ROOT / "notebooks" / f"{stem}.md").exists(), f"toc entry {entry} has no notebooks/{stem}.md"
            named.add(stem)
        else:
            assert (REPO_ROOT / f"{entry}.md").exists(), f"toc entry {entry} has no source"
    assert named == {p.stem for p in NOTEBOOKS}, "every notebook must be a chapter, and only those"


def test_config_renders_committed_notebooks_without_executing():
    cfg = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert cfg["only_build_toc_files"] is True
    assert cfg["bibtex_bibfiles"] == ["references.bib"]
    assert "results/quick/**" in cfg["exclude_patterns"]


def test_retarget_moves_only_results_paths():
    toc = {"root": "results/full/notebooks/abstract",
           "parts": [{"chapters": [{"file": "book/related_work"},
                                   {"file": "results/full/notebooks/03_evaluate", "sections": [
                                       {"file": "results/full/notebooks/07_statistics"}]}]}]}
    out = report._retarget(toc, "full", "quick")
    assert report.toc_entries(out) == ["results/quick/notebooks/abstract", "book/related_work",
                                       "results/quick/notebooks/03_evaluate", "results/quick/notebooks/07_statistics"]


def test_citations_resolve_to_bib_entries():
    bib = (REPO_ROOT / "references.bib").read_text()
    keys = set()
    for path in [*NOTEBOOKS, *(REPO_ROOT / "book").glob("*.md")]:
        for chunk in path.read_text().split("{cite}`")[1:]:
            keys.update(k.strip() for k in chunk.split("`", 1)[0].split(","))
    missing = sorted(k for k in keys if f"{{{k}," not in bib)
    assert keys and not missing, f"cited but not in references.bib: {missing}"


def test_parameters_validate_preset_and_task():
    assert report.parameters("quick") == {"preset": "quick", "task": "all", "seeds": None}
    with pytest.raises(ValueError, match="unknown preset"):
        report.parameters("nope")
    with pytest.raises(ValueError, match="unknown task"):
        report.parameters("quick", task="mnist")


def test_unknown_notebook_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown notebook"):
        report.notebook_sources(["99_nothing"])


def test_staleness_follows_inputs_and_parameters(tmp_path, monkeypatch):
    import nbformat

    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path / "results"))
    source = tmp_path / "nb.md"
    source.write_text("# x\n")
    output = tmp_path / "nb.ipynb"
    params = report.parameters("quick")
    monkeypatch.setattr(report, "SHARED_INPUTS", ())  # only the source and the preset's results count here
    assert report.is_stale(source, output, "quick", params)  # no output yet
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"parameters": params}
    nbformat.write(nb, output)
    old = time.time() - 100
    os.utime(source, (old, old))
    assert not report.is_stale(source, output, "quick", params)
    assert report.is_stale(source, output, "quick", {**params, "seeds": [1, 2]})  # other parameters
    profiles = results_dir("quick") / "profiles" / "tag"
    profiles.mkdir(parents=True)
    (profiles / "profiles.csv").write_text("x\n")  # newer results than the output
    assert report.is_stale(source, output, "quick", params)


def test_figure_names_and_workflow_diagram(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="bare file stem"):
        plots.figure_path("a/b", "quick")
    fig = plots.workflow_diagram()
    plots.save(fig, "workflow", "quick")
    path = plots.figure_path("workflow", "quick")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {name for name, _ in plots.WORKFLOW_STAGES} <= texts


def test_method_order_is_stable():
    assert plots.method_order(["best_fixed_hindsight", "zeta", "seed_p95", "alpha"]) == ["seed_p95", "best_fixed_hindsight", "alpha", "zeta"]


def _runs() -> pd.DataFrame:
    rows = []
    for seed, noise in zip((42, 43, 44), (0.0, 0.01, -0.01)):
        for deadline in (1.0, 5.0):
            for method, eff in (("anytime", 0.8), ("static_small", 0.7), ("best_fixed_hindsight", 0.85), ("slack_aware", 0.9)):
                rows.append({"task": "sst2", "method": method, "workload": "steady", "kind": "poisson", "load": 0.5,
                             "deadline_ms": deadline, "seed": seed, "effective_accuracy": eff + noise + deadline / 100,
                             "hit_rate": 0.9})
    return pd.DataFrame(rows)


def test_key_results_from_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    (tmp_path / "quick" / "eval").mkdir(parents=True)
    _runs().to_csv(tmp_path / "quick" / "eval" / "runs_sst2.csv", index=False)
    pd.DataFrame({"task": ["sst2"], "metric": ["x"]}).to_csv(tmp_path / "quick" / "eval" / "summary_sst2.csv", index=False)
    with pytest.raises(results.ResultsMissingError, match="no MANIFEST.json vouches"):
        results.key_results("quick")
    refresh_manifest(tmp_path / "quick" / "eval")
    table = results.key_results("quick")
    row = table.iloc[0]
    assert row["planner_eff_acc"] == pytest.approx(0.83)  # mean of 0.81 and 0.85, the same in every seed on average
    assert row["best_baseline"] == "static_small"  # slack_aware and the oracle are not baselines here
    assert row["oracle_eff_acc"] == pytest.approx(0.88)
    assert row["planner_ci_low"] < 0.83 < row["planner_ci_high"]
    text = results.key_results_markdown(table, "quick")
    assert "| sst2 | 0.5 | 2 × 3 | 0.830" in text
    # a mixed-deadline workload of the preset (Poisson arrivals too) is not steady traffic
    mixed = results.mixed_workloads("quick")
    assert mixed, "the quick preset should carry a mixed-deadline workload"
    classes = results.deadline_classes("quick")[mixed[0]]  # what the bounds in expectation weigh it by
    assert sum(share for share, _ in classes) == pytest.approx(1.0) and all(scale > 0 for _, scale in classes)
    both = pd.concat([_runs(), _runs().assign(workload=mixed[0], effective_accuracy=0.1)], ignore_index=True)
    both.to_csv(tmp_path / "quick" / "eval" / "runs_sst2.csv", index=False)
    refresh_manifest(tmp_path / "quick" / "eval")
    assert results.key_results("quick").iloc[0]["planner_eff_acc"] == pytest.approx(0.83)


def test_grid_scorecard_counts_cells_within_the_margin_and_late_cells():
    runs = _runs().assign(late_rate=0.002)
    other = _runs().assign(workload="bursty", kind="gamma", late_rate=0.02)
    other.loc[other["method"] == "anytime", "effective_accuracy"] += 0.2  # anytime best in this cell
    bound = pd.concat([runs, other]).query("method == 'anytime'").assign(method="clairvoyant",
                                                                            effective_accuracy=1.0, late_rate=np.nan)
    cells = results.grid_cells(pd.concat([runs, other, bound], ignore_index=True)).set_index("workload")
    assert cells.loc["steady", "best_other_method"] == "slack_aware"  # the ablation and hindsight count here
    assert cells.loc["steady", "margin"] == pytest.approx(0.83 - 0.93)
    assert cells.loc["bursty", "margin"] == pytest.approx(1.03 - 0.93)
    assert cells.loc["bursty", "share_of_bound"] == pytest.approx(1.03)
    assert cells.loc["bursty", "late_rate"] == pytest.approx(0.02)


def test_an_edited_results_table_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    eval_dir = tmp_path / "quick" / "eval"
    eval_dir.mkdir(parents=True)
    _runs().to_csv(eval_dir / "runs_sst2.csv", index=False)
    refresh_manifest(eval_dir)
    text = (eval_dir / "runs_sst2.csv").read_text()
    (eval_dir / "runs_sst2.csv").write_text(text.replace("0.9", "0.8", 1))  # one edited value
    with pytest.raises(SchemaError, match="runs_sst2.csv: content differs"):
        results.load_runs("quick")


def test_missing_runs_name_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    with pytest.raises(results.ResultsMissingError, match="planner evaluate"):
        results.load_runs("quick")


def test_readme_block_replacement():
    text = f"intro\n{readme.START}\nold\n{readme.END}\ntail\n"
    out = readme.replace_block(text, "| new |")
    assert readme.current_block(out) == "| new |" and out.startswith("intro") and out.endswith("tail\n")
    with pytest.raises(ValueError, match="exactly one"):
        readme.replace_block("no markers", "x")


def test_readme_training_table_is_the_published_weights_manifest(tmp_path):
    """The README's trained-weights table is generated from the committed weights manifest, and `--check` notices
    when it is not."""
    text = (REPO_ROOT / "README.md").read_text()
    block = readme.render("full", "training")
    assert readme.current_block(text, name="training") == block.strip(), \
        "README trained-weights table is stale: run `python -m planner readme --preset full`"
    trained = results.training_record("full")[0]
    for row in trained.itertuples():  # every published model, with its own measured accuracy
        assert f"| {row.model} | {row.task} |" in block and f"{100 * row.eval_accuracy:.2f} %" in block
    stale = tmp_path / "README.md"
    stale.write_text(readme.replace_block(text, "| old |", stale, "training"))
    assert main(["readme", "--preset", "full", "--check", "--readme", str(stale)]) == 1


def test_readme_key_results_match_full_results():
    """The committed README table is what `planner readme --preset full` computes from the committed CSVs."""
    if not any((REPO_ROOT / "results" / "full" / "eval").glob("runs_*.csv")):
        pytest.skip("no full-preset evaluation runs committed yet (results/full/eval/runs_*.csv)")
    text = (REPO_ROOT / "README.md").read_text()
    assert readme.current_block(text) == readme.render("full").strip(), \
        "README key-results table is stale: run `python -m planner readme --preset full`"


def test_ablation_restrictions_are_subsets():
    from bundles import synthetic_bundle

    profiles = synthetic_bundle(n_configs=24).profiles
    assert ablation.restrict(profiles, "full space").equals(profiles.reset_index(drop=True))
    assert set(ablation.restrict(profiles, "batch 1 only")["batch_size"]) == {1}
    assert set(ablation.restrict(profiles, "fp32 only")["precision"]) == {"fp32"}
    assert set(ablation.restrict(profiles, "PyTorch only (no ONNX Runtime)")["runtime"]) == {"torch"}
    assert ablation.restrict(profiles, "one model (fastest)")["model"].nunique() == 1
    with pytest.raises(KeyError, match="unknown ablation"):
        ablation.restrict(profiles, "no such thing")


def test_ablation_rerun_scores_choices_on_measured_data():
    from bundles import synthetic_bundle

    bundle = synthetic_bundle(n_configs=24)
    table = ablation.rerun(bundle.profiles, bundle.samples, "sst2", [1.0, 5.0, 50.0], names=["full space", "fp32 only"])
    assert len(table) == 6
    ok = table.dropna(subset=["hit_fraction"])
    assert ((ok["hit_fraction"] >= 0) & (ok["hit_fraction"] <= 1)).all()
    assert np.allclose(ok["isolated_effective_accuracy"], ok["accuracy"] * ok["hit_fraction"])
    generous = table[table["deadline_ms"] == 50.0]
    full, fp32 = generous.set_index("ablation").loc[["full space", "fp32 only"], "accuracy"]
    assert full >= fp32  # the full space contains the fp32-only space


# ------------------------------------------------------------------ glue placeholders
# myst-nb (>= 0.14) resolves a glue role or directive against the keys glued by the same notebook;
# another page's key must be written `path/to/notebook.ipynb::key`, which this book does not use.
GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`]+)`")
GLUE_DIRECTIVE = re.compile(r"^`{3,}\{glue(?::\w+)?\}[ \t]+(\S+)", re.MULTILINE)
# A role inside an inline code span (`` `{glue:text}`x`` ``) is printed literally: the cause of the
# "{glue:text}" placeholders left in the built HTML.
GLUE_IN_CODE_SPAN = re.compile(r"(?<!`)`\{glue")


def glued_names(code: str) -> set[str]:
    """Keys passed as a literal first argument to ``glue(...)`` in a code cell."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "glue"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value)
    return names


def pasted_names(markdown: str) -> set[str]:
    """Keys a markdown cell pastes with a glue role (format spec dropped) or a glue directive."""
    keys = [k.strip() for k in GLUE_ROLE.findall(markdown)] + GLUE_DIRECTIVE.findall(markdown)
    return {k if "::" in k else k.split(":", 1)[0] for k in keys}


def test_glue_scanners_see_roles_directives_and_calls():
    md = "a {glue:text}`x:.1%` b {glue}`y` c\n```{glue:md} z\n:format: myst\n```\n"
    assert pasted_names(md) == {"x", "y", "z"}
    assert glued_names('glue("x", 1, display=False)\nmyst_nb.glue("y", 2)\nprint("z")') == {"x", "y"}
    assert GLUE_IN_CODE_SPAN.search("machine `{glue:text}`m``") and not GLUE_IN_CODE_SPAN.search(md)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_pasted_glue_key_is_glued_by_the_same_chapter(path):
    nb = jupytext.read(path)
    glued: set[str] = set()
    pasted: set[str] = set()
    in_code_span = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
            glued |= glued_names(source)
        elif cell.cell_type == "markdown":
            pasted |= pasted_names(cell.source)
            in_code_span += [m.group(0) for m in GLUE_IN_CODE_SPAN.finditer(cell.source)]
    assert not in_code_span, f"{path.name}: a glue role inside `...` renders as literal text; drop the outer backticks"
    cross_page = {k for k in pasted if "::" in k}
    missing = sorted(pasted - cross_page - glued)
    assert not missing, f"{path.name} pastes glue keys it never glues (rendered as unresolved): {missing}"


# ------------------------------------------------------------------ machine-independent executed notebooks
# A warning names the file that raised it by absolute path; a committed notebook must not carry them.
ABSOLUTE_PATH = re.compile(r"(?<![\w.~<>/])/(?:[\w.+-]+/)+[\w.+-]+\.py\b|(?<![\w.~<>/])/(?:[\w.+-]+/)+site-packages/")
TEXT_MIMES = ("text/plain", "text/html", "text/markdown", "text/latex")


def _output_texts(nb):
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                yield i, out.get("text", "")
            yield from ((i, line) for line in out.get("traceback", []))
            for mime, value in (out.get("data") or {}).items():
                if mime.endswith(TEXT_MIMES):
                    yield i, value if isinstance(value, str) else "".join(value)


def test_machine_paths_are_rewritten_in_text_outputs():
    import nbformat

    site = report.machine_paths()[0][0]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x", outputs=[
        nbformat.v4.new_output("stream", name="stderr", text=f"{site}/tqdm/auto.py:21: TqdmWarning: x\n"
                                                             f"{report.REPO_ROOT}/planner/a.py:3: UserWarning\n"),
        nbformat.v4.new_output("display_data", data={"text/plain": f"'{report.REPO_ROOT}/results/x.csv'"}),
    ])]
    report._machine_independent(nb)
    texts = [t for _, t in _output_texts(nb)]
    assert texts == ["<site-packages>/tqdm/auto.py:21: TqdmWarning: x\n./planner/a.py:3: UserWarning\n",
                     "'./results/x.csv'"]
    assert not any(ABSOLUTE_PATH.search(t) for t in texts)


def test_kernel_environment_adds_filters_and_restores(monkeypatch):
    monkeypatch.setenv("PYTHONWARNINGS", "default")
    with report.kernel_environment():
        assert os.environ["PYTHONWARNINGS"].split(",") == ["default", *report.KERNEL_WARNING_FILTERS]
    assert os.environ["PYTHONWARNINGS"] == "default"
    monkeypatch.delenv("PYTHONWARNINGS")
    with report.kernel_environment():
        pass
    assert "PYTHONWARNINGS" not in os.environ


def test_nbval_sanitize_file_maps_any_machine_to_the_committed_form():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(report.NBVAL_SANITIZE)
    rules = [(cfg[s]["regex"], cfg[s]["replace"]) for s in cfg.sections()]

    def sanitize(text):
        for regex, replace in rules:
            text = re.sub(regex, replace, text)
        return text

    here = [("/srv/a/.venv/lib/python3.11/site-packages", "<site-packages>"), ("/usr/lib/python3.11", "<stdlib>"),
            ("/srv/a", ".")]
    raw = ("/srv/a/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: W\n/srv/a/planner/plots.py:57: U\n"
           "/usr/lib/python3.11/warnings.py:3\n9.156074337272578\n")
    committed = report.strip_machine_paths(raw, here)
    elsewhere = (raw.replace("/srv/a", "/home/u/clone").replace("/usr/lib/python3.11", "/opt/py/lib/python3.11")
                 .replace("578", "580"))
    assert sanitize(committed) == sanitize(elsewhere)
    assert sanitize("0.880 and 12 ms") == "0.880 and 12 ms"


EXECUTED = sorted(p for preset in ("full", "quick")
                  for p in (REPO_ROOT / "results" / preset / "notebooks").glob("*.ipynb")
                  if not p.name.endswith(".partial.ipynb"))


@pytest.mark.parametrize("path", EXECUTED, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_executed_notebooks_hold_no_absolute_paths(path):
    """nbval on a fresh clone compares outputs verbatim: a path of the executing machine fails it."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    found = [(i, m.group(0)) for i, text in _output_texts(nb) for m in ABSOLUTE_PATH.finditer(text)]
    found += [(i, str(REPO_ROOT)) for i, text in _output_texts(nb) if str(REPO_ROOT) in text]
    assert not found, f"{path.relative_to(REPO_ROOT)}: absolute paths in outputs (cell, path): {found[:5]}"
    record = nb.metadata.get("papermill", {})
    paths = {k: record.get(k) for k in ("input_path", "output_path") if isinstance(record.get(k), str)}
    assert not {k: v for k, v in paths.items() if v.startswith("/") or str(REPO_ROOT) in v}, \
        f"{path.relative_to(REPO_ROOT)}: papermill metadata names this machine's paths: {paths}"


def _nbval_options(cell) -> dict:
    """The options nbval itself reads from a code cell: its tags, then its comment markers."""
    from nbval.plugin import find_comment_markers, find_metadata_tags

    return {**dict(find_metadata_tags(cell.metadata)), **dict(find_comment_markers(cell.source))}


def test_reproducibility_commit_cell_is_ignored_by_nbval():
    nb = jupytext.read(REPO_ROOT / "notebooks" / "reproducibility.md")
    commit_cells = [c for c in nb.cells if c.cell_type == "code" and "rev-parse" in c.source]
    assert len(commit_cells) == 1 and _nbval_options(commit_cells[0]).get("check") is False


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_nbval_markers_in_sources_are_ones_nbval_reads(path):
    """A misspelt marker (e.g. "# NBVAL_IGNORE_OUTPUT (why)") is silently ignored by nbval."""
    from nbval.plugin import comment_markers, metadata_tags

    for i, cell in enumerate(c for c in jupytext.read(path).cells if c.cell_type == "code"):
        markers = [line.strip().lstrip("#").strip() for line in cell.source.splitlines()
                   if re.match(r"\s*#\s*(NBVAL|PYTEST_VALIDATE)_", line)]
        tags = [t for t in cell.metadata.get("tags", []) if t.startswith("nbval")]
        assert set(markers) <= set(comment_markers), f"{path.name} code cell {i}: {markers}"
        assert set(tags) <= set(metadata_tags), f"{path.name} code cell {i}: {tags}"


# ------------------------------------------------------------------ issue #17 figure helpers
def test_roofline_plot_has_log_axes_ceilings_and_a_legend():
    points = pd.DataFrame({"arithmetic_intensity": [1.0, 10.0, 50.0], "achieved_gflops": [2.0, 30.0, 300.0],
                           "precision": ["fp32", "fp32", "int8"], "runtime": ["torch", "onnxruntime", "onnxruntime"]})
    ax = plots.roofline(points, {"fp32": 170e9, "int8": 790e9})
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    ceilings = sorted(round(seg[0][1]) for coll in ax.collections if hasattr(coll, "get_segments")
                      for seg in coll.get_segments() if len(seg) == 2 and seg[0][1] == seg[1][1])
    assert ceilings == [170, 790]
    assert len(ax.get_legend().get_texts()) == 3
    assert len(set(points["arithmetic_intensity"])) > 1
    plots.plt.close("all")


def test_identity_scatter_log_keeps_small_points_visible():
    frame = pd.DataFrame({"sim": [2.0, 10.0, 40.0], "live": [2.1, 11.0, 533.0], "point": ["a", "b", "c"]})
    ax = plots.identity_scatter_log(frame, "sim", "live", band=0.1, annotate="point")
    assert ax.get_yscale() == "log"
    assert any(t.get_text().startswith("c\n") for t in ax.texts)  # the outlier is named
    plots.plt.close("all")


def test_method_fronts_draw_the_proposed_method_last_and_on_top():
    proposed = registry.proposed()
    baseline = next(m for m in registry.METHODS if m != proposed)
    points = pd.DataFrame({"method": [proposed, proposed, baseline, baseline], "lat_p95_ms": [1, 5, 1, 5],
                           "effective_accuracy": [0.8, 0.85, 0.8, 0.86]})
    ax = plots.method_fronts(points)
    lines = ax.get_lines()
    assert lines[-1].get_label().startswith(plots.method_label(proposed))
    assert lines[-1].get_zorder() > max(line.get_zorder() for line in lines[:-1])
    assert lines[-1].get_linewidth() > lines[0].get_linewidth()
    plots.plt.close("all")


def test_honest_accuracy_axis_starts_at_a_round_value_and_states_the_spread():
    fig, ax = plots.plt.subplots()
    assert plots.honest_accuracy_axis(ax, [0.874, 0.893]) == pytest.approx((0.8, 0.9))
    assert "1.9 points" in ax.texts[0].get_text()
    with pytest.raises(ValueError, match="no finite"):
        plots.honest_accuracy_axis(ax, [float("nan")])
    plots.plt.close("all")


def test_line_styles_differ_between_neighbouring_curves():
    styles = [plots.line_style(i) for i in range(4)]
    assert len({(s["color"], s["marker"], s["linestyle"]) for s in styles}) == 4
    assert len({s["linestyle"] for s in styles}) == 4


def test_figure_problems_names_single_valued_axes_missing_legends_and_overlapping_ticks():
    fig, axes = plots.plt.subplots(1, 3, figsize=(9, 2.5))
    axes[0].plot([0.5, 0.5, 0.5], [1, 2, 3], label="a")
    axes[0].legend()
    axes[1].plot([1, 2], [1, 2], label="a")
    axes[1].plot([1, 2], [2, 1], label="b")
    axes[2].set_xticks(range(8), [f"a long tick label {i}" for i in range(8)])
    found = " | ".join(plots.figure_problems(fig))
    assert "same x value" in found and "2 labelled series and no legend" in found and "overlapping x tick" in found
    plots.plt.close(fig)
    ok, ax = plots.plt.subplots()
    plots.roofline(pd.DataFrame({"arithmetic_intensity": [1.0, 10.0], "achieved_gflops": [2.0, 30.0],
                                 "precision": ["fp32", "int8"], "runtime": ["torch", "torch"]}),
                   {"fp32": 170e9, "int8": 790e9}, ax=ax)
    assert plots.figure_problems(ok) == []
    plots.plt.close("all")


def test_save_refuses_a_figure_with_problems_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    fig, ax = plots.plt.subplots()
    ax.plot([1, 2], [1, 2], label="a")
    ax.plot([1, 2], [2, 1], label="b")
    with pytest.raises(plots.FigureProblemError, match="'two': .*2 labelled series and no legend"):
        plots.save(fig, "two", "quick")
    assert not plots.figure_path("two", "quick").exists()
    ax.legend()
    plots.save(fig, "two", "quick")
    assert plots.figure_path("two", "quick").exists()
    flat, ax = plots.plt.subplots()
    ax.plot([0.8, 0.8], [0.5, 0.6], label="one load")  # the quick smoke run has one load by design
    plots.save(flat, "flat", "quick")
    with pytest.raises(plots.FigureProblemError, match="same x value"):
        plots.save(flat, "flat", "full")
    plots.plt.close("all")


def test_cell_heatmap_annotates_every_cell_with_readable_text():
    frame = pd.DataFrame({"workload": ["a", "a", "b", "b"], "load": [0.5, 1.0, 0.5, 1.0],
                          "margin": [-0.02, 0.01, 0.05, np.nan]})
    fig, ax = plots.plt.subplots()
    plots.cell_heatmap(frame, "margin", row="workload", col="load", ax=ax)
    texts = {t.get_text(): t.get_color() for t in ax.texts}
    assert set(texts) == {"-0.020", "+0.010", "+0.050"}  # the missing cell gets no number
    assert texts["+0.050"] == "white" and texts["+0.010"] == "black"  # the extreme is dark, near zero light
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    plots.plt.close(fig)


def test_training_record_reads_recipes_and_per_epoch_curves_from_the_published_manifest(tmp_path, monkeypatch):
    import json

    from planner.analysis import results
    from planner.models import published

    monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path))
    assert all(frame.empty for frame in results.training_record("quick"))
    folder = published.weights_dir("quick")
    folder.mkdir(parents=True)
    record = {"epochs": 2.0, "train_seconds": 600.0, "eval_split": "test", "eval_accuracy": 0.91,
              "epoch_losses": [{"epoch": 0, "mean_loss": 1.2, "eval_accuracy": 0.7, "steps": 5, "train_seconds": 300},
                               {"epoch": 1, "mean_loss": 0.8, "eval_accuracy": 0.91, "steps": 5, "train_seconds": 600}]}
    entry = {"file": "resnet18.safetensors", "sha256": "ab" * 32, "bytes": 22_400_000,
             "recipe": {"task": "cifar10", "params": {"arch": "resnet18", "stem": "cifar", "lr": 0.2}},
             "data_checksum": "x", "record": record}
    (folder / published.MANIFEST_FILE).write_text(json.dumps({"models": {"resnet18": entry}}))
    trained, curves = results.training_record("quick")
    assert trained.loc[0, "stem"] == "cifar" and trained.loc[0, "train_minutes"] == 10.0
    assert trained.loc[0, "eval_accuracy"] == 0.91 and trained.loc[0, "megabytes"] == 22.4
    assert curves["eval_accuracy"].tolist() == [0.7, 0.91]
    assert trained.loc[0, "lr_cycles"] == "1"
    fig = plots.training_curves(curves)
    assert plots.figure_problems(fig) == []
    plots.plt.close(fig)

    # the book flags profiles measured on another checkpoint than the published one (whole evaluation set)
    profile = pd.DataFrame({"model": ["resnet18", "resnet18"], "runtime": ["torch", "onnxruntime"],
                            "precision": ["fp32", "fp32"], "cascade_small": [None, None],
                            "config_id": ["c/r/torch", "c/r/ort"]})
    hits = [True] * 91 + [False] * 9
    predictions = pd.DataFrame({"config_id": ["c/r/torch"] * 100 + ["c/r/ort"] * 100, "correct": hits + hits})
    assert results.models_profiled_before_publishing("quick", profile, predictions).empty
    predictions["correct"] = [True] * 74 + [False] * 126
    stale = results.models_profiled_before_publishing("quick", profile, predictions)
    assert stale[["model", "published_accuracy", "profiled_accuracy"]].values.tolist() == [["resnet18", 0.91, 0.74]]
    assert results.models_profiled_before_publishing("quick", profile, predictions.iloc[0:0]).loc[0, "model"] == "resnet18"
    entry["recipe"]["params"]["cycles"] = [[8, 1.0], [6, 0.3]]
    (folder / published.MANIFEST_FILE).write_text(json.dumps({"models": {"resnet18": entry}}))
    assert results.training_record("quick")[0].loc[0, "lr_cycles"] == "8@1 + 6@0.3"
    assert results.training_record("quick")[0].loc[0, "averaged_cycle_ends"] == 1
    assert results.training_record("quick")[0].loc[0, "distilled_from"] == "-"
    entry["recipe"]["distill"] = {"teacher": {"model": "mpnet-l12"}, "alpha": 0.8, "temperature": 2.0}
    (folder / published.MANIFEST_FILE).write_text(json.dumps({"models": {"resnet18": entry}}))
    assert results.training_record("quick")[0].loc[0, "distilled_from"] == "mpnet-l12 (alpha 0.8, T 2)"


def _sweep_runs(gaps: dict[float, float]) -> pd.DataFrame:
    """Two seeds of one cell: best_fixed_hindsight at 0.8 per deadline, anytime 0.8 + gap; anytime
    sheds where it loses (late 0) while the fixed configuration answers late there."""
    rows = []
    for seed in (1, 2):
        for deadline, gap in gaps.items():
            rows.append(dict(task="sst2", workload="steady", load=0.5, seed=seed, deadline_ms=deadline,
                             method="best_fixed_hindsight", effective_accuracy=0.8, hit_rate=0.85,
                             late_rate=0.15 if gap < 0 else 0.0))
            rows.append(dict(task="sst2", workload="steady", load=0.5, seed=seed, deadline_ms=deadline,
                             method="anytime", effective_accuracy=0.8 + gap, hit_rate=0.85 + gap, late_rate=0.0))
    return pd.DataFrame(rows)


def test_worst_cell_text_names_the_deadlines_where_the_margin_is_lost():
    runs = _sweep_runs({2.0: -0.3, 10.0: 0.01, 50.0: -0.05, 100.0: 0.02})
    cells = results.grid_cells(runs)
    text = results.worst_cell_text(runs, cells, "sst2")
    assert "steady at load 0.5" in text and "best_fixed_hindsight" in text and "4 deadlines" in text
    assert "2 ms (0.500 vs 0.800; late 0.0% vs 15.0%)" in text and "50 ms (0.750 vs 0.800" in text
    assert "10 ms" not in text and "100 ms" not in text  # deadlines it wins are not blamed
    ahead = _sweep_runs({2.0: 0.01, 10.0: 0.02})
    assert "ahead at every deadline" in results.worst_cell_text(ahead, results.grid_cells(ahead), "sst2")
    with pytest.raises(ValueError, match="no runs"):
        results.cell_by_deadline(runs, "sst2", "bursty", 0.5, ["anytime"])


def test_tight_deadline_text_says_which_misses_the_tightest_deadlines_explain():
    tight_only = _sweep_runs({2.0: -0.3, 3.0: -0.1, 10.0: 0.01, 50.0: 0.0})
    other = _sweep_runs({2.0: -0.3, 3.0: -0.1, 10.0: -0.05, 50.0: -0.05}).assign(workload="mixed")
    runs = pd.concat([tight_only, other], ignore_index=True)
    text = results.tight_deadline_text(runs, results.grid_cells(runs), "sst2")
    assert "1 of the 2 cells that miss the margin are within it" in text and "(2 and 3 ms)" in text
    assert "mixed at load 0.5 is at -0.050" in text and "steady at load 0.5 is at" not in text
    short = _sweep_runs({2.0: -0.3, 3.0: 0.0})
    assert "too short" in results.tight_deadline_text(short, results.grid_cells(short), "sst2")
    fine = _sweep_runs({2.0: 0.01, 10.0: 0.0})
    assert results.tight_deadline_text(fine, results.grid_cells(fine), "sst2") == "On sst2 no cell misses the margin."


def test_late_detail_counts_deadlines_above_the_limit_and_pools_requests():
    """A cell averaged over its deadlines can sit under the limit while one deadline is above it; the
    pooled share weighs requests, not runs, and heavy load is left out."""
    runs = _sweep_runs({2.0: 0.0, 10.0: 0.0}).assign(n_requests=1000, late_rate=0.0)
    anytime = runs["method"] == "anytime"
    runs.loc[anytime & (runs["deadline_ms"] == 2.0), "late_rate"] = 0.016
    runs.loc[anytime & (runs["deadline_ms"] == 10.0), "late_rate"] = 0.002
    heavy = runs[anytime].assign(load=1.3, late_rate=0.5)
    runs = pd.concat([runs, heavy], ignore_index=True)
    runs["n_late"] = runs["late_rate"] * runs["n_requests"]
    light = runs[(runs["method"] == "anytime") & (runs["load"] == 0.5)]
    assert light["late_rate"].mean() < 0.01  # the cell's mean over its deadlines hides it
    text = results.late_detail_text(runs, "sst2")
    assert "the share answered late is 0.90%" in text
    assert "1 of 2 exceed 1% (the largest 1.60%, steady at load 0.5 and 2 ms)" in text
    assert results.late_detail_text(runs, "cifar10") == ""


def test_scorecard_counts_margin_misses_and_late_light_cells_from_cells():
    runs = _runs().assign(late_rate=0.002)
    heavy = _runs().assign(load=1.3, late_rate=0.2)                     # late, but not at a light load
    late = _runs().assign(workload="bursty", kind="gamma", late_rate=0.03)
    late.loc[late["method"] == "anytime", "effective_accuracy"] += 0.2  # within the margin, yet late
    card = results.scorecard(results.grid_cells(pd.concat([runs, heavy, late], ignore_index=True))).iloc[0]
    assert (card["n_cells"], card["cells_within_margin"]) == (3, 1)
    assert (card["n_light_cells"], card["light_cells_late_over"]) == (2, 1)
    assert card["max_light_late_rate"] == pytest.approx(0.03)
    assert card["worst_margin"] == pytest.approx(0.83 - 0.93)


def _hindsight_runs(hindsight_accuracy: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs at two deadlines: at the relaxed one the hindsight method serves `s/cas` in 2 traces of 3."""
    rows = []
    for seed, chosen in zip((1, 2, 3), ("s/cas", "s/cas", "s/big")):
        for deadline in (5.0, 100.0):
            rows.append(dict(task="sst2", workload="steady", load=0.5, seed=seed, deadline_ms=deadline,
                             method="best_fixed_hindsight", main_config=chosen, accuracy=hindsight_accuracy))
            rows.append(dict(task="sst2", workload="steady", load=0.5, seed=seed, deadline_ms=deadline,
                             method="anytime", main_config="s/big", accuracy=0.91))
    rows.append(dict(task="sst2", workload="steady-mixed", load=0.5, seed=1, deadline_ms=500.0,
                     method="best_fixed_hindsight", main_config="s/small", accuracy=0.5))  # mixed: not the sweep
    profiles = pd.DataFrame({"task": "sst2", "config_id": ["s/big", "s/cas", "s/small", "s/none"],
                             "calibration_accuracy": [0.94, 0.89, 0.87, np.nan],
                             "accuracy": [0.93, 0.93, 0.90, np.nan]})
    return pd.DataFrame(rows), profiles


def test_hindsight_choice_ranks_the_hindsight_configuration_on_the_calibration_half():
    runs, profiles = _hindsight_runs(0.94)
    choice = results.hindsight_choice(runs, profiles, "sst2", mixed=["steady-mixed"])
    assert choice["deadline_ms"] == 100.0 and choice["config_id"] == "s/cas"
    assert choice["share_of_traces"] == pytest.approx(2 / 3)
    assert (choice["calibration_rank"], choice["n_candidates"]) == (2, 3)  # unmeasured configurations not ranked
    text = results.hindsight_choice_text(choice)
    assert "place 2 of 3 (0.890 against 0.940" in text and "0.940 correct there against 0.910" in text
    behind = results.hindsight_choice_text(results.hindsight_choice(*_hindsight_runs(0.90), "sst2", ["steady-mixed"]))
    assert "place" not in behind  # where the proposed method answers better, nothing to explain
    with pytest.raises(ValueError, match="no single-deadline runs"):
        results.hindsight_choice(runs, profiles, "cifar10")
    with pytest.raises(ValueError, match="no calibration accuracy"):
        results.hindsight_choice(runs, profiles[profiles["config_id"] != "s/cas"], "sst2", ["steady-mixed"])


def test_loadgen_sweep_figure_passes_the_figure_check():
    rows = [dict(task="sst2", method=m, target_qps=q, lat_p99_ms=p99, target_latency_ms=20.0,
                 result="VALID" if p99 <= 20 else "INVALID", effective_accuracy=eff)
            for m, scale in (("anytime", 1.0), ("seed_p95", 1.5))
            for q, p99, eff in ((25, 8 * scale, 0.9), (100, 15 * scale, 0.85), (200, 60 * scale, 0.5 / scale))]
    fig, axes = plots.plt.subplots(1, 2)
    plots.loadgen_sweep(pd.DataFrame(rows), axes, "sst2")
    assert plots.figure_problems(fig) == []
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["anytime", "seed_p95"]
    plots.plt.close(fig)


def test_pareto_scatter_styles_a_runtime_precision_pair_the_same_in_every_panel():
    def frame(precisions):
        return pd.DataFrame({"config_id": [f"c{i}" for i in range(len(precisions))], "lat_p95_ms": [1.0, 2.0, 3.0][:len(precisions)],
                             "accuracy": [0.8, 0.85, 0.9][:len(precisions)], "runtime": "onnxruntime",
                             "precision": precisions})
    fig, (a, b) = plots.plt.subplots(1, 2)
    plots.pareto_scatter(frame(["fp32", "bf16", "int8"]), ax=a)
    plots.pareto_scatter(frame(["fp32", "int8"]), ax=b)  # bf16 absent here: int8 must not take its marker
    def styles(ax):
        return {c.get_label(): (tuple(c.get_facecolor()[0]), c.get_paths()[0].vertices.tobytes()) for c in ax.collections}
    assert styles(a)["onnxruntime/int8"] == styles(b)["onnxruntime/int8"]
    assert styles(a)["onnxruntime/fp32"] == styles(b)["onnxruntime/fp32"]
    plots.plt.close(fig)


def test_bound_gap_text_sets_the_bounds_ceiling_against_the_best_single_configuration():
    """Three configurations that are each right on a different two thirds of the examples: some
    configuration is right on every example, the best single one on two thirds of them, so one
    configuration on time reaches at most 2/3 of the bound; the per-deadline shares come from the runs."""
    from bundles import toy_bundle
    from planner.splits import example_ids

    n = 60
    specs = [{"model": f"m{k}", "batch_size": 1, "samples_ms": np.full(20, 1.0 + k),
              "correct": np.arange(n) % 3 != k} for k in range(3)]
    bundle = toy_bundle("sst2", specs)
    ceiling = results.bound_ceiling(bundle, "sst2")
    assert ceiling["oracle"] == 1.0 and ceiling["n_examples"] == len(example_ids(bundle, "sst2"))
    assert ceiling["best_single"] == pytest.approx(2 / 3, abs=0.1)
    rows = [dict(task="sst2", workload="steady", load=0.5, seed=s, deadline_ms=d, method=m, effective_accuracy=v)
            for s in (1, 2) for d, a, b in ((2.0, 0.1, 0.5), (50.0, 0.6, 0.9))
            for m, v in (("anytime", a), ("clairvoyant", b))]
    text = results.bound_gap_text(pd.DataFrame(rows), bundle, "sst2")
    assert "0.20 at 2 ms (0.100 of 0.500), 0.67 at 50 ms (0.600 of 0.900)" in text
    assert f"would reach {ceiling['best_single']:.3f} of the bound" in text
    assert results.bound_gap_text(pd.DataFrame(rows).query("method == 'anytime'"), bundle, "sst2") == ""


def test_the_scorecard_table_shows_the_ceiling_only_where_every_cell_has_one():
    runs = _runs().assign(late_rate=0.002)
    bound = runs.query("method == 'anytime'").assign(method="clairvoyant", effective_accuracy=1.0)
    cells = results.grid_cells(pd.concat([runs, bound], ignore_index=True))
    ceilings = cells[["task", "workload", "load"]].assign(ceiling=0.9)
    with_it = results.grid_scorecard_markdown(results.scorecard(cells, ceilings), "quick")
    without = results.grid_scorecard_markdown(results.scorecard(cells), "quick")
    row = [line for line in with_it.splitlines() if line.startswith("| sst2")][0].split(" | ")
    assert row[4:6] == [f"{0.83:.3f}", "0.900"]  # the share, then the most an example-blind policy can expect
    assert [line for line in without.splitlines() if line.startswith("| sst2")][0].split(" | ")[5] == "—"
    assert "most an example-blind policy can expect" in with_it.splitlines()[0] and "target was 95%" in with_it
