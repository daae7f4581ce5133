"""The configuration page users ask the assistant about is generated from `Settings`."""

from __future__ import annotations

from models.settings import Settings
from models.settings_reference import COMMAND, PAGE, reference_markdown


def test_every_setting_has_a_description():
    undescribed = [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()]
    assert undescribed == [], "give these Settings fields a description= for the configuration page"


def test_the_configuration_page_is_up_to_date():
    assert PAGE.read_text(encoding="utf-8") == reference_markdown(), (
        f"{PAGE.name} differs from what Settings and models/configuration_template.md give; "
        f"regenerate it with: {COMMAND}"
    )
