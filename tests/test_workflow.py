"""The GitHub Pages workflow (.github/workflows/book.yml) and the book's repository buttons.

The workflow cannot run here, so it is checked offline: against the GitHub-workflow JSON schema that
check-jsonschema ships (``--builtin-schema vendor.github-workflows``, no download), and for what it must
do (install as the README says, build the full book with -W from the committed notebooks, publish
``_build/html``). The buttons' address is resolved at build time (planner/report/repository.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jupyter_book.config import get_final_config

from planner.config import ConfigError
from planner.paths import REPO_ROOT
from planner.report import book as report
from planner.report import repository

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "book.yml"
URL = "https://github.com/someone/anytime-planner"
# Every proxy variable pointed at a closed port: a download attempt fails instead of succeeding quietly.
DEAD_PROXY = "http://127.0.0.1:9"


def check_workflow(path: Path) -> subprocess.CompletedProcess:
    """``check-jsonschema --builtin-schema vendor.github-workflows PATH`` with the network unusable."""
    env = {**os.environ, "NO_PROXY": "", "no_proxy": ""}
    env.update({name: DEAD_PROXY for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                                               "http_proxy", "https_proxy", "all_proxy")})
    command = [str(Path(sys.executable).with_name("check-jsonschema")), "--builtin-schema",
               "vendor.github-workflows", str(path)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def load_workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_pages_workflow_matches_the_github_workflow_schema_offline():
    result = check_workflow(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("old, new", [
    ("    runs-on: ubuntu-latest\n    timeout-minutes: 15\n", "    timeout-minutes: 15\n"),  # deploy job: no runner
    ("  pages: write\n", "  pages: publish\n"),  # not a permission level
    ("  workflow_dispatch:\n", "  workflow_dispatched:\n"),  # not an event
], ids=["job-without-runner", "bad-permission", "unknown-event"])
def test_schema_check_rejects_a_broken_workflow(tmp_path, old, new):
    text = WORKFLOW.read_text()
    assert old in text, f"the workflow no longer contains {old!r}; update this test's breakage"
    broken = tmp_path / "book.yml"
    broken.write_text(text.replace(old, new, 1))
    result = check_workflow(broken)
    assert result.returncode != 0
    assert "Schema validation errors" in result.stdout and "book.yml" in result.stdout  # not a crash or download


def test_workflow_builds_the_full_book_with_the_readme_setup_and_publishes_it():
    wf = load_workflow()
    on = wf.get("on", wf.get(True))  # PyYAML reads the bare key `on` as True
    assert on["push"]["branches"] == ["main"] and "workflow_dispatch" in on
    assert wf["permissions"]["pages"] == "write" and wf["permissions"]["id-token"] == "write"
    assert wf["concurrency"]["group"]
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    runs = [step.get("run", "") for step in build["steps"]]
    uses = [step.get("uses", "").split("@")[0] for step in build["steps"]]
    # installed for the preset it builds: the full preset's venv stamp differs from the default one
    assert runs.index("make venv PRESET=full") < runs.index("make book PRESET=full")
    book_step = build["steps"][runs.index("make book PRESET=full")]
    assert book_step["env"][repository.REPOSITORY_URL_ENV] == "${{ github.server_url }}/${{ github.repository }}"
    upload = build["steps"][uses.index("actions/upload-pages-artifact")]
    assert upload["with"]["path"] == "_build/html"
    assert uses.index("actions/upload-pages-artifact") > runs.index("make book PRESET=full")
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]


def test_make_book_full_is_the_in_place_book_only_build_with_warnings_as_errors():
    # The workflow relies on the Makefile's `book` target; a dry run shows the command it runs.
    result = subprocess.run(["make", "-n", "book", "PRESET=full"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "-m planner report --preset full --book-only" in result.stdout
    assert "--no-warnings-as-errors" not in result.stdout


@pytest.mark.parametrize("remote, expected", [
    ("https://github.com/someone/anytime-planner.git", URL),
    ("https://github.com/someone/anytime-planner", URL),
    ("https://someone:token@github.com/someone/anytime-planner.git\n", URL),  # credentials never reach the book
    ("git@github.com:someone/anytime-planner.git", URL),
    ("ssh://git@github.com:22/someone/anytime-planner.git", URL),
    ("https://git.example.org:8443/group/sub/planner.git", "https://git.example.org:8443/group/sub/planner"),
    ("/work/main", None),
    ("../anytime-planner", None),
    ("file:///srv/git/anytime-planner.git", None),
    ("https://github.com/", None),
])
def test_web_url_of_a_git_remote(remote, expected):
    assert repository.web_url(remote) == expected


def _git_repo(path: Path, remote: str | None) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    if remote:
        subprocess.run(["git", "remote", "add", "origin", remote], cwd=path, check=True)
    return path


def test_repository_url_prefers_the_argument_then_the_environment_then_origin(tmp_path, monkeypatch):
    checkout = _git_repo(tmp_path / "clone", "git@github.com:someone/anytime-planner.git")
    monkeypatch.delenv(repository.REPOSITORY_URL_ENV, raising=False)
    assert repository.repository_url(root=checkout) == URL
    monkeypatch.setenv(repository.REPOSITORY_URL_ENV, "https://github.com/fork/anytime-planner")
    assert repository.repository_url(root=checkout) == "https://github.com/fork/anytime-planner"
    assert repository.repository_url("https://github.com/other/x", root=checkout) == "https://github.com/other/x"


def test_repository_url_is_none_without_a_web_remote(tmp_path, monkeypatch):
    monkeypatch.delenv(repository.REPOSITORY_URL_ENV, raising=False)
    assert repository.repository_url(root=_git_repo(tmp_path / "bare", None)) is None
    assert repository.repository_url(root=_git_repo(tmp_path / "local", "/srv/git/planner")) is None
    not_git = tmp_path / "plain"
    not_git.mkdir()
    assert repository.repository_url(root=not_git) is None


def test_a_requested_address_that_is_not_a_web_repository_is_an_error(monkeypatch):
    monkeypatch.setenv(repository.REPOSITORY_URL_ENV, "/work/main")
    with pytest.raises(ConfigError, match="PLANNER_REPOSITORY_URL.*/work/main"):
        repository.repository_url()


def test_with_repository_switches_the_buttons_with_the_url():
    committed = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())
    on = repository.with_repository(committed, URL)
    assert on["repository"] == {**committed["repository"], "url": URL}
    assert on["html"]["use_repository_button"] and on["html"]["use_issues_button"]
    assert not on["html"]["use_edit_page_button"]
    assert committed["repository"]["url"] == "" and not committed["html"]["use_repository_button"]  # a copy
    off = repository.with_repository(committed, None)
    assert off == committed  # the committed config is the no-address one


@pytest.mark.parametrize("preset, url", [("full", URL), ("full", None), ("quick", URL)])
def test_book_config_carries_the_buttons_to_the_theme(tmp_path, monkeypatch, preset, url):
    monkeypatch.setattr(report, "BUILD_DIR", tmp_path / "_build")
    if preset == "full":  # the committed study builds in place
        root, toc, cfg_path = report.book_inputs(preset, url)
        assert root == REPO_ROOT and toc == report.BOOK_TOC
    else:  # any other preset is staged, with its own title
        monkeypatch.setenv("PLANNER_RESULTS_DIR", str(tmp_path / "results"))
        root, toc, cfg_path = report.book_inputs(preset, url)
        assert root == tmp_path / "_build" / "stage" / preset
        assert "(quick run)" in yaml.safe_load(cfg_path.read_text())["title"]
    assert cfg_path.is_relative_to(tmp_path)
    # Jupyter Book's own translation of the written config (it raises on buttons without a url)
    sphinx_config, _ = get_final_config(user_yaml=cfg_path, sourcedir=REPO_ROOT,
                                        cli_config={"latex_individualpages": False})
    theme = sphinx_config["html_theme_options"]
    assert theme["repository_url"] == (url or "")
    assert theme["use_repository_button"] is theme["use_issues_button"] is bool(url)
    assert theme["repository_branch"] == "main"
