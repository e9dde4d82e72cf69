"""Issue 22: the C++ reader (cpp/include/ovcrypt/holders.hpp) unwraps a package's data key through the
manifest's age holder, with the identity from the same variables as the Python runtime, and refuses what
the Python runtime refuses (the oracle), each with one line and the same error class.
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path
from typing import Any

import pytest

from ovcrypt_runtime._format.manifest import HolderEntry, Manifest, parse_manifest
from ovcrypt_runtime._keys.holders import holder_for
from tests.helpers import make_ir, render_folder, runtime_for
from tests.test_cpp import Programs, assert_refused_one_line, dump, programs, sha256_file  # noqa: F401
from tests.test_holders import Identity, keygen

TRANSIT = HolderEntry("transit:models", {"ciphertext": "vault:v1:AAAA"})  # listed first: skipped by both readers


def with_holders(folder: Path, dek: bytes, holders: tuple[HolderEntry, ...]) -> None:
    """Give a rendered package the holders a `data-key` build would, signed under its key."""
    path = folder / "manifest.json"
    manifest = parse_manifest(path.read_bytes())
    signed = Manifest(manifest.generator, manifest.key_id, manifest.models, holders=holders, product="acme-vision")
    path.write_bytes(signed.signed(dek).to_json())


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes, Identity]:
    root = tmp_path_factory.mktemp("cpp-holders")
    xml = make_ir(root / "src" / "det.xml", 96 << 10, seed=7)
    dek = secrets.token_bytes(32)
    folder = render_folder(root / "_ovcrypt", {"det": xml}, dek)
    one = keygen(root, "device")
    age_holder = HolderEntry(one.recipient, holder_for(one.recipient, "OVCRYPT_KEY").wrap(dek, {}))
    with_holders(folder, dek, (TRANSIT, age_holder))
    return folder, xml, dek, one


def python_error(folder: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    with monkeypatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        try:
            runtime_for(folder).read_model("det")
        except Exception as exc:  # the oracle's class
            return type(exc).__name__
    return "ok"


def test_cpp_reads_the_age_holder_with_only_an_identity(
    programs: Programs, package: tuple[Path, Path, bytes, Identity], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    folder, xml, dek, one = package
    expected = {p.name: sha256_file(p) for p in (xml, xml.with_suffix(".bin"))}
    for env in ({"OVCRYPT_KEY_AGE_IDENTITY": one.secret}, {"OVCRYPT_KEY_AGE_IDENTITY_FILE": str(one.file)}):
        run = dump(programs, folder, "det", env=env)
        assert run.code == 0, run.stderr
        assert run.digests == expected and "compiled det on CPU" in run.stdout
        assert dek.hex() not in run.stdout + run.stderr and one.secret not in run.stdout + run.stderr
        assert python_error(folder, env, monkeypatch) == "ok"


def test_cpp_refuses_like_the_python_runtime(
    programs: Programs, package: tuple[Path, Path, bytes, Identity], tmp_path: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    folder, _, dek, one = package
    stranger = keygen(tmp_path, "stranger")
    cases: list[tuple[str, Path, dict[str, str], str]] = [
        ("wrong identity", folder, {"OVCRYPT_KEY_AGE_IDENTITY": stranger.secret}, "is not this recipient"),
        ("no identity", folder, {}, "OVCRYPT_KEY_AGE_IDENTITY"),
        ("bad identity", folder, {"OVCRYPT_KEY_AGE_IDENTITY": one.secret[:-1] + "Q"}, "is not an age identity"),
    ]
    doc = json.loads((folder / "manifest.json").read_text())
    other = holder_for(one.recipient, "OVCRYPT_KEY").wrap(secrets.token_bytes(32), {})  # another data key's

    def edit(name: str, d: dict[str, Any]) -> None:
        if name == "removed holder":
            d["holders"].pop()
        elif name == "unknown scheme":
            d["holders"].append({"uri": "gcpkms:p/k", "stanza": {"w": "x"}})
        else:
            d["holders"][1]["stanza"].update(other)

    for name in ("removed holder", "unknown scheme", "swapped stanza"):
        edited = tmp_path / name.replace(" ", "-")
        edited.mkdir()
        shutil.copytree(folder / "models", edited / "models")
        copy = json.loads(json.dumps(doc))
        edit(name, copy)
        (edited / "manifest.json").write_text(json.dumps(copy))
        why = {"removed holder": "OVCRYPT_KEY", "unknown scheme": "scheme 'gcpkms', which this reader does not know",
               "swapped stanza": "gave a key of another key id"}[name]  # fmt: skip
        cases.append((name, edited, {"OVCRYPT_KEY_AGE_IDENTITY": one.secret}, why))
    for name, where, env, why in cases:
        run = dump(programs, where, "det", env=env)
        oracle = python_error(where, env, monkeypatch)
        line = assert_refused_one_line(run, oracle)
        assert why in line, (name, line)
        assert dek.hex() not in run.stdout + run.stderr and one.secret not in line and stranger.secret not in line
