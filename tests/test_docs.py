"""The documentation's links: every ``(#anchor)`` names a heading (GitHub's slug rules), every relative path
exists, and a path's ``#anchor`` into another markdown page names one of its headings, in the README, the pages
under docs/, the checkpoints' README and the benchmark results. A renamed section, a page moved or a moved image
breaks a link silently otherwise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "benchmarks" / "checkpoints" / "README.md",
        *sorted((ROOT / "benchmarks" / "results").glob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but hyphens and underscores dropped, spaces to
    hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set:
    seen: dict = {}
    out = set()
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        base = slug(line.lstrip("#"))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(text: str) -> list:
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    found = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'src="([^"]+)"', text)
    return [t for t in found if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_resolve(doc):
    text = doc.read_text()
    heads = anchors(text)
    broken = []
    for target in links(text):
        path, _, anchor = target.partition("#")
        if path:
            dest = doc.parent / path
            if not dest.exists():
                broken.append(target)
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
                broken.append(target)
        elif anchor not in heads:
            broken.append(target)
    assert not broken, f"{doc.name}: broken links {broken}"


def test_the_slug_rules():
    assert slug(" Energy and time on Loihi: `spikediff report`") == "energy-and-time-on-loihi-spikediff-report"
    assert slug("The deployment compiler: NIR -> one") == "the-deployment-compiler-nir---one"
