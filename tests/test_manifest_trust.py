"""Issue 9: nothing in an unauthenticated manifest chooses code to import or environment variables to read.

The manifest is authenticated with the key, so it cannot also say where the key comes from. The key's
variable and provider are rendered into the generated `_settings` module (code); a manifest that names
them (as version 1 did, or edited to) is ignored for that purpose.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ovcrypt_runtime._errors import KeyMissingError, ManifestError
from ovcrypt_runtime._format.manifest import compute_mac
from tests.helpers import make_ir, render_folder, runtime_for

EVIL = "evil_provider_for_test"


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable module that records being imported, and a secret in another variable."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / f"{EVIL}.py").write_text(
        f"import pathlib\npathlib.Path({str(tmp_path / 'imported')!r}).write_text('yes')\n"
        "def get(key_id):\n    return None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("PRECIOUS", "not-a-key-but-a-secret-of-19")
    return tmp_path


def _as_v1(doc: dict[str, object], key: bytes) -> dict[str, object]:
    """The same models in the version 1 layout, naming the planted provider and variable, validly signed."""
    models = doc["models"]
    assert isinstance(models, dict)
    v1_models = {name: {p.rsplit(".", 1)[1]: e for p, e in m["files"].items()} for name, m in models.items()}
    body = {"format": "hatch-ovcrypt-manifest/1", "generator": "x", "key_env": "PRECIOUS",
            "key_provider": f"{EVIL}:get", "key_id": doc["key_id"], "models": v1_models}  # fmt: skip
    return {**body, "mac": compute_mac(key, body)}


@pytest.mark.parametrize("layout", ["v2 with v1 fields added", "v1 naming them"])
def test_edited_manifest_cannot_choose_code_or_variables(
    planted: Path, tmp_path: Path, key: bytes, layout: str
) -> None:
    folder = render_folder(tmp_path / "_ovcrypt", {"m": make_ir(tmp_path / "src" / "m.xml", 4096)}, key)
    manifest = folder / "manifest.json"
    doc = json.loads(manifest.read_text())
    planted_fields = {"key_env": "PRECIOUS", "key_provider": f"{EVIL}:get"}
    edited = {**doc, **planted_fields} if layout.startswith("v2") else _as_v1(doc, key)
    manifest.write_text(json.dumps(edited))
    runtime = runtime_for(folder)
    expected = ManifestError if layout.startswith("v2") else KeyMissingError  # v2 allows no other field
    with pytest.raises(expected) as info:
        runtime.read_model("m")
    message = str(info.value)
    assert "PRECIOUS" not in message and "19" not in message, message
    assert EVIL not in sys.modules and not (planted / "imported").exists(), "the manifest chose a module to import"
    if layout.startswith("v1"):
        assert "OVCRYPT_KEY" in message, message
        runtime.keyring.add(key)  # set_key: imports nothing either
        assert runtime.read_model("m") is not None  # a validly signed version 1 manifest still loads
    assert EVIL not in sys.modules
