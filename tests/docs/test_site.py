"""The documentation site builds with `mkdocs build --strict`, and every picture a page shows is committed.

Runs in CI (mkdocs-material and mkdocstrings[python] are in the `dev` extra); it is skipped only where
mkdocs itself is not installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

# ![alt](path) and <img src="path">, outside of fenced code blocks.
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)|<img\s[^>]*src=\"([^\"]+)\"")
FENCE = re.compile(r"^(\s*)(```|~~~).*?^\1\2\s*$", re.S | re.M)


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _pictures(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return [a or b for a, b in IMAGE.findall(text)]


def test_every_picture_a_page_shows_exists():
    seen = 0
    for page in _pages():
        for ref in _pictures(page):
            assert not re.match(r"[a-z]+://", ref), f"{page.relative_to(ROOT)} shows a remote picture {ref}"
            target = (page.parent / ref.split("#")[0]).resolve()
            assert target.is_file(), f"{page.relative_to(ROOT)} shows {ref}, which is not in docs/"
            assert DOCS in target.parents, f"{page.relative_to(ROOT)} shows {ref} from outside docs/"
            seen += 1
    assert seen >= 3, "the tutorial shows the forward process, a reverse trajectory and a sample grid"


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    assert (site / "index.html").is_file()
    assert (site / "api" / "index.html").is_file()
    # The API reference is generated from the docstrings: the core's Denoiser must be on its page.
    assert "noisecraft.core" in (site / "api" / "core" / "index.html").read_text(encoding="utf-8")
