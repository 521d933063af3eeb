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
