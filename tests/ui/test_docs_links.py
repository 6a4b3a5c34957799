"""The docs hold together: every relative link in README.md, docs/*.md and deployments/README.md
names a file in the repository (and, with #anchor, a heading of that page), every docs/ page is
linked from the README, and the README stays short."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.paths import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "deployments" / "README.md"]
README_MAX_LINES = 200

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code (links there are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    """Targets of markdown links and images that point into the repository (no URL scheme)."""
    return [t for t in LINK.findall(prose(text)) if not SCHEME.match(t)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", prose(page.read_text()), re.M)}


def problems(page: Path, root: Path = REPO) -> list[str]:
    """Each broken relative link of `page`: a missing file, a path outside `root`, a missing anchor."""
    out = []
    for target in links(page.read_text()):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_relative_to(root.resolve()):
            out.append(f"{target}: outside the repository")
        elif not dest.is_file():
            out.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            out.append(f"{target}: no heading #{anchor} in {dest.relative_to(root.resolve())}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    assert page.is_file()
    assert problems(page) == []


def test_every_docs_page_is_linked_from_the_readme():
    readme = REPO / "README.md"
    linked = {(REPO / t.partition("#")[0]).resolve() for t in links(readme.read_text())}
    pages = sorted((REPO / "docs").glob("*.md"))
    assert pages, "no docs pages"
    assert [p.name for p in pages if p.resolve() not in linked] == []


def test_readme_is_at_most_200_lines():
    n = len((REPO / "README.md").read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move detail to docs/"


def test_checker_finds_broken_links_and_ignores_code_and_urls(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# A page\n\n## The engine: one way\n")
    (tmp_path / "docs" / "pic.png").write_bytes(b"png")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/there.md) [ok anchor](docs/there.md#the-engine-one-way) ![img](docs/pic.png)\n"
        "[web](https://example.org/missing.md) [mail](mailto:a@b.c) [self](#top)\n"
        "`[in code](docs/nope.md)`\n\n```\n[in a block](docs/nope.md)\n```\n"
        "[gone](docs/gone.md) [bad anchor](docs/there.md#nowhere) [up](../../etc/passwd)\n"
        "# Top\n")
    assert problems(page, tmp_path) == [
        "docs/gone.md: no such file",
        "docs/there.md#nowhere: no heading #nowhere in docs/there.md",
        "../../etc/passwd: outside the repository",
    ]
