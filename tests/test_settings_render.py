"""Issue 17, item 8: `_settings.py` is rendered as code, so a value must land in it as its exact literal.

The old renderer used `repr(value)` as a `re` replacement template, which turns `\\n` into a newline and
`\\'` into a closing quote: a crafted value ended the string and ran its own statement on import.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest

from hatch_ovcrypt.hook.writer import SETTINGS_MODULE, render_settings

# Ends the string literal and starts a statement of its own, under the old template rendering.
CRAFTED = '"\\\'\nopen(__file__ + ".ran", "w").write("code ran")\n#'
VALUES = [
    CRAFTED,
    "\\1\\g<0>\\\\n",  # group references and escapes that a template would expand
    "OVCRYPT_KEY",
]


@pytest.mark.parametrize("field", ["KEY_ENV", "KEY_PROVIDER", "EXTENSIONS"])
@pytest.mark.parametrize("value", VALUES)
def test_a_crafted_value_lands_as_its_literal_and_runs_nothing(tmp_path: Path, value: str, field: str) -> None:
    values: dict[str, Any] = {"KEY_ENV": "OVCRYPT_KEY", "KEY_PROVIDER": None, "EXTENSIONS": ()}
    values[field] = (value, "openvino_tokenizers") if field == "EXTENSIONS" else value
    render_settings(tmp_path, values["KEY_ENV"], values["KEY_PROVIDER"], values["EXTENSIONS"])
    settings = runpy.run_path(str(tmp_path / SETTINGS_MODULE))
    assert not (tmp_path / f"{SETTINGS_MODULE}.ran").exists(), "the rendered settings ran injected code"
    assert {name: settings[name] for name in values} == values


def test_defaults_render_as_before(tmp_path: Path) -> None:
    render_settings(tmp_path, "ACME_KEY", None, ())
    settings = runpy.run_path(str(tmp_path / SETTINGS_MODULE))
    assert (settings["KEY_ENV"], settings["KEY_PROVIDER"], settings["EXTENSIONS"]) == ("ACME_KEY", None, ())
