"""Every ``docs/<page>.md`` that a source file's text points to is in the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = re.compile(r"docs/[A-Za-z0-9_./-]+?\.md")


def test_docs_that_the_code_refers_to_exist():
    files = [p for top in ("recon", "layers", "data", "tools") for p in (ROOT / top).rglob("*.py")]
    refs = {(str(p.relative_to(ROOT)), ref) for p in files for ref in REF.findall(p.read_text())}
    assert any(ref == "docs/conventions.md" for _, ref in refs)  # the scan sees the references
    missing = sorted((src, ref) for src, ref in refs if not (ROOT / ref).is_file())
    assert missing == []
