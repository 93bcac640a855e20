"""The book's repository and issue buttons: on when the repository's web address is known, off otherwise.

The address is never typed into ``_config.yml``: a fork or a mirror would link to someone else's
repository, and this checkout may have no remote at all. It is resolved at build time, first match wins:
an explicit argument, ``$PLANNER_REPOSITORY_URL`` (the Pages workflow sets it to
``${{ github.server_url }}/${{ github.repository }}``), then the ``origin`` remote when it is a web
repository (https, ssh or ``git@host:owner/repo``). Otherwise the book is built without the buttons.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from planner.config import ConfigError
from planner.paths import REPO_ROOT

REPOSITORY_URL_ENV = "PLANNER_REPOSITORY_URL"
# The html options of _config.yml that need repository.url; the edit button stays off (it would point at
# the generated results/full/notebooks/*.ipynb, not the notebooks/*.md sources).
BUTTONS = ("use_repository_button", "use_issues_button")
# git's scp-like syntax: [user@]host:path (no "//" after the colon, no "/" before it).
_SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?(?P<host>[^@/:]+):(?!//)(?P<path>.+)$")


def web_url(remote: str) -> str | None:
    """``https://host/owner/repo`` for a git remote address (https, http, ssh or scp-like), without
    credentials, port or ``.git``; None for a local path or ``file://`` remote, which has no web page."""
    remote = remote.strip()
    parts = urlsplit(remote)
    if parts.scheme in ("http", "https", "ssh", "git", "git+ssh", "ssh+git"):
        host, path = parts.hostname, parts.path
        scheme = parts.scheme if parts.scheme in ("http", "https") else "https"
        port = f":{parts.port}" if parts.port and scheme == parts.scheme else ""  # an ssh port is not the web's
    elif not parts.scheme and (m := _SCP_LIKE.match(remote)):
        host, path, scheme, port = m["host"], "/" + m["path"].lstrip("/"), "https", ""
    else:
        return None
    path = re.sub(r"\.git$", "", path.rstrip("/")).rstrip("/")
    if not host or path.strip("/") == "":
        return None
    return urlunsplit((scheme, host + port, path, "", ""))


def origin_url(root: Path = REPO_ROOT) -> str | None:
    """The web address of ``root``'s ``origin`` remote; None without git, a remote or a web address."""
    try:
        result = subprocess.run(["git", "remote", "get-url", "origin"], cwd=root, capture_output=True,
                                text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return web_url(result.stdout) if result.returncode == 0 and result.stdout.strip() else None


def repository_url(explicit: str | None = None, root: Path = REPO_ROOT) -> str | None:
    """The repository's web address for the book's buttons (see the module docstring for the order).

    An explicit or environment address that is not a web repository raises :class:`ConfigError`: the
    caller asked for buttons, so building silently without them would hide the mistake.
    """
    requested = ((explicit, "the repository_url argument"),
                 (os.environ.get(REPOSITORY_URL_ENV), f"${REPOSITORY_URL_ENV}"))
    for value, source in requested:
        if value:
            url = web_url(value)
            if url is None:
                raise ConfigError(f"{source}: {value!r} is not a web repository address "
                                  f"(expected e.g. https://github.com/OWNER/REPO)")
            return url
    return origin_url(root)


def with_repository(cfg: dict, url: str | None) -> dict:
    """A copy of a Jupyter Book config with ``repository.url`` set to ``url`` and the repository and issue
    buttons on, or, without a url, the url empty and those buttons off (Jupyter Book refuses buttons
    without a url)."""
    out = copy.deepcopy(cfg)
    repo = out.get("repository") or {}
    repo["url"] = url or ""
    out["repository"] = repo
    html = out.get("html") or {}
    html.update({button: bool(url) for button in BUTTONS})
    out["html"] = html
    return out
