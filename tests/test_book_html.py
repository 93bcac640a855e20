"""The built book's HTML: no glue placeholder is left unrendered (run by `make test` after the book build).

Skipped, with the reason, when no book has been built. The static check that every pasted key is
glued by its own chapter is in test_report.py; this one sees what Sphinx actually produced.
"""

from __future__ import annotations

import re

import pytest

from planner.paths import REPO_ROOT

HTML = REPO_ROOT / "_build" / "html"
PAGES = sorted(p for p in HTML.rglob("*.html") if "_sources" not in p.parts and "_static" not in p.parts)
# `{glue` or `{glue:text}` printed as text, also when Sphinx wrapped it in inline-code spans
UNRENDERED = re.compile(r"\{glue(?::[a-z]+)?\}")

pytestmark = pytest.mark.skipif(not (HTML / "index.html").exists(),
                                reason="no built book in _build/html (run `make book`)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(HTML)))
def test_no_unrendered_glue_placeholder(page):
    text = page.read_text(errors="replace")
    found = [text[max(m.start() - 60, 0):m.end() + 40] for m in UNRENDERED.finditer(text)]
    assert not found, f"{page.relative_to(HTML)}: unrendered glue placeholder(s): {found[:3]}"
