"""Documentation that is generated from the code stays in step with it."""

from __future__ import annotations

import re

from conftest import ROOT

from service.settings import settings_table


def test_the_settings_table_in_docs_is_the_generated_one():
    text = (ROOT / "docs" / "service.md").read_text()
    found = re.search(r"<!-- settings:start -->\n(.*?)<!-- settings:end -->", text, re.S)
    assert found, "docs/service.md has no settings table markers"
    assert found.group(1) == settings_table(), "stale: regenerate with `python -m service.settings`"


def test_every_setting_has_a_description():
    from service.settings import Settings

    assert [n for n, f in Settings.model_fields.items() if not f.description] == []


def test_readme_is_short():
    """The README is the front door; the details live in docs/ (issue 17)."""
    assert len((ROOT / "README.md").read_text()) <= 12000


_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _markdown_files() -> list:
    return [
        ROOT / "README.md",
        ROOT / "bench" / "README.md",
        *sorted((ROOT / "docs").rglob("*.md")),
    ]


def test_every_relative_link_in_the_docs_points_to_a_file():
    broken = []
    for md in _markdown_files():
        text = re.sub(r"```.*?```", "", md.read_text(), flags=re.S)  # code blocks hold no links
        text = re.sub(r"`[^`\n]*`", "", text)  # nor does inline code
        for found in _LINK.finditer(text):
            target = found.group(1) or found.group(2)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL (http:, mailto:) or an anchor in the same file
            path = target.split("#", 1)[0]
            if not (md.parent / path).exists():
                broken.append(f"{md.relative_to(ROOT)}: {target}")
    assert broken == []
