"""Issue 22, end to end: a product whose key is a committed wrapped data key (`data-key`), built by real
hatchling with only an age identity in the build's environment, installed into a fresh venv, and loaded
on a "device" that has only its own age identity: no raw key anywhere.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ovcrypt_runtime._errors import KeyMissingError, WrongKeyError
from ovcrypt_runtime._format.spec import key_id
from ovcrypt_runtime._keys.holders import age, holder_for
from ovcrypt_runtime._keys.holders.datakey import DataKey, entry, read_datakey, write_datakey
from tests.helpers import (
    assert_rekey_refused,
    build_wheel,
    make_ir,
    only_wheel,
    reference_output,
    runtime_for,
    sample_input,
    unpack,
    write_product,
)
from tests.keyscan import assert_no_key_in_locals
from tests.test_holders import Identity, keygen
from tests.venvs import Venv

MODELS = {"detector": "models/detector.xml"}
DATA_KEY = 'data-key = "keys/models.datakey"'
INFER = """
import json
import numpy as np
from acme_vision._ovcrypt import compile_model
x = np.random.default_rng(123).standard_normal((1, 64)).astype(np.float32)
print(json.dumps(compile_model("detector")(x)[0].tolist()))
"""
MANIFEST = "acme_vision/_ovcrypt/manifest.json"


@dataclass
class Product:
    root: Path
    dek: bytes
    one: Identity  # the release pipeline's identity (it builds)
    two: Identity  # a device's
    wheel: Path
    xml: Path

    def secrets(self) -> list[bytes | str]:
        scalars = [age.parse_identities(i.secret, "x")[0] for i in (self.one, self.two)]
        return [self.dek, self.one.secret, self.two.secret, *scalars]


def write_datakey_for(path: Path, dek: bytes, *recipients: str) -> None:
    holders = [holder_for(uri, "OVCRYPT_KEY") for uri in recipients]
    stanzas = tuple(entry(h.uri, h.wrap(dek, {})) for h in holders)
    write_datakey(path, DataKey(key_id(dek).hex(), "acme-vision", stanzas))


def build_env(identity: Identity) -> dict[str, str]:
    """The release pipeline: an age identity, no raw key (SOURCE_DATE_EPOCH for byte-identical wheels)."""
    return {"OVCRYPT_KEY_AGE_IDENTITY_FILE": str(identity.file), "SOURCE_DATE_EPOCH": "1700000000"}


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Product:
    root = write_product(tmp_path_factory.mktemp("product"), MODELS, extra_hook_options=DATA_KEY)
    xml = make_ir(root / MODELS["detector"], 96 << 10, seed=5)
    keys = tmp_path_factory.mktemp("identities")
    one, two = keygen(keys, "pipeline"), keygen(keys, "device")
    dek = secrets.token_bytes(32)
    write_datakey_for(root / "keys" / "models.datakey", dek, one.recipient, two.recipient)
    build_wheel(root, build_env(one))
    return Product(root, dek, one, two, only_wheel(root / "dist"), xml)


def test_wheel_carries_the_committed_stanzas_under_the_mac_and_no_key(product: Product, tmp_path: Path) -> None:
    datakey = read_datakey(product.root / "keys" / "models.datakey")
    with zipfile.ZipFile(product.wheel) as zf:
        manifest = json.loads(zf.read(MANIFEST))
        blobs = {name: zf.read(name) for name in zf.namelist()}
    assert manifest["key_id"] == key_id(product.dek).hex() == datakey.key_id
    assert manifest["holders"] == [h.to_json() for h in datakey.holders] and manifest["product"] == "acme-vision"
    assert any(name.endswith("/_ovcrypt/_keys/holders/age.py") for name in blobs), "a data-key product ships holders"
    for name, blob in blobs.items():  # no data key, no identity, in any file of the wheel
        for secret in product.secrets():
            needle = secret if isinstance(secret, bytes) else secret.encode()
            assert needle not in blob, name
        assert product.dek.hex().encode() not in blob.lower(), name
    # Same inputs, same bytes: the stanzas are copied, never wrapped anew at build time.
    build_wheel(product.root, build_env(product.one), outdir=tmp_path / "again")
    assert only_wheel(tmp_path / "again").read_bytes() == product.wheel.read_bytes()


def test_device_with_only_an_age_identity_loads_the_installed_wheel(product: Product, tmp_path: Path) -> None:
    env = Venv(tmp_path / "venv")
    env.pip_install(str(product.wheel))
    expected = reference_output(product.xml, sample_input())
    for device in ({"OVCRYPT_KEY_AGE_IDENTITY": product.two.secret},
                   {"OVCRYPT_KEY_AGE_IDENTITY_FILE": str(product.one.file)}):  # fmt: skip
        result = env.python_code(INFER, env=device, cwd=tmp_path)
        assert np.array_equal(np.asarray(json.loads(result.stdout), dtype=np.float32), expected)
    stranger = keygen(tmp_path, "stranger")
    wrong = env.python_code(INFER, env={"OVCRYPT_KEY_AGE_IDENTITY": stranger.secret}, cwd=tmp_path, check=False)
    last = wrong.stderr.strip().splitlines()[-1]
    assert last.startswith("acme_vision._ovcrypt._errors.WrongKeyError: ")
    assert f"the age identity offered here ({stranger.recipient}) is not this recipient" in last
    assert product.two.recipient in last and stranger.secret not in wrong.stderr
    none = env.python_code(INFER, env={}, cwd=tmp_path, check=False)
    last = none.stderr.strip().splitlines()[-1]
    assert "KeyMissingError" in last and "OVCRYPT_KEY_AGE_IDENTITY" in last and "OVCRYPT_KEY_FILE" in last


def test_removed_holder_protects_only_later_releases(product: Product, tmp_path: Path) -> None:
    project = tmp_path / "later"
    subprocess.run(["cp", "-r", str(product.root), str(project)], check=True)
    (project / "dist").mkdir(exist_ok=True)
    for old in (project / "dist").glob("*.whl"):
        old.unlink()
    from hatch_ovcrypt.cli import main

    assert main(["datakey", "remove-holder", str(project / "keys" / "models.datakey"), product.two.recipient]) == 0
    build_wheel(project, build_env(product.one))
    later = unpack(only_wheel(project / "dist"), tmp_path / "later-wheel") / "acme_vision" / "_ovcrypt"
    earlier = unpack(product.wheel, tmp_path / "earlier-wheel") / "acme_vision" / "_ovcrypt"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OVCRYPT_KEY_AGE_IDENTITY", product.two.secret)
        with pytest.raises(WrongKeyError, match="is not this recipient") as info:
            runtime_for(later).read_model("detector")
        holders = json.loads((later / "manifest.json").read_text())["holders"]
        assert [h["uri"] for h in holders] == [product.one.recipient]
        assert_no_key_in_locals(info.value, *product.secrets())
        assert runtime_for(earlier).read_model("detector") is not None  # the earlier release still opens for it


def test_runtime_errors_keep_no_key_in_locals(
    product: Product, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = unpack(product.wheel, tmp_path / "w") / "acme_vision" / "_ovcrypt"
    monkeypatch.setenv("OVCRYPT_KEY_AGE_IDENTITY", keygen(tmp_path, "stranger").secret)
    with pytest.raises(WrongKeyError) as wrong:
        runtime_for(folder).read_model("detector")
    assert "\n" not in str(wrong.value)
    assert_no_key_in_locals(wrong.value, *product.secrets())
    text = "".join(traceback.format_exception(wrong.value))
    assert product.dek.hex() not in text and product.two.secret not in text
    monkeypatch.delenv("OVCRYPT_KEY_AGE_IDENTITY")
    with pytest.raises(KeyMissingError, match="no key holder could unwrap"):
        runtime_for(folder).read_model("detector")


def test_build_problems_name_the_data_key(product: Product, tmp_path: Path) -> None:
    nothing = build_wheel(product.root, {}, outdir=tmp_path / "none", check=False)
    assert nothing.returncode != 0
    out = nothing.stdout + nothing.stderr
    assert "tool.hatch.build.targets.wheel.hooks.ovcrypt.data-key` names" in out
    assert "OVCRYPT_KEY_AGE_IDENTITY" in out and product.one.recipient in out
    missing = write_product(tmp_path / "p2", MODELS, extra_hook_options='data-key = "keys/nope.datakey"')
    make_ir(missing / MODELS["detector"], 8 << 10)
    result = build_wheel(missing, build_env(product.one), check=False)
    assert result.returncode != 0 and "keys/nope.datakey does not exist" in result.stdout + result.stderr
    assert sys.executable  # (the builds ran with this interpreter's hatch-ovcrypt)


def test_check_and_show_name_the_data_key_and_never_the_key(
    product: Product, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hatch_ovcrypt.cli import main

    monkeypatch.setenv("OVCRYPT_KEY_AGE_IDENTITY_FILE", str(product.one.file))
    assert main(["check", str(product.root)]) == 0
    assert main(["datakey", "show", str(product.wheel)]) == 0
    out = capsys.readouterr().out
    assert f"key: unwrapped from data-key keys/models.datakey, key id {key_id(product.dek).hex()}" in out
    assert f"holder  age     {product.two.recipient}" in out and "product acme-vision" in out
    assert product.dek.hex() not in out and product.one.secret not in out


@pytest.mark.parametrize(
    ("value", "why"),
    [(1, "for build hook `ovcrypt` must be a string"), ("", "must be the path of a wrapped data key file, such as")],
)
def test_data_key_option_problems_name_their_toml_path(tmp_path: Path, value: object, why: str) -> None:
    from hatch_ovcrypt.config import parse_options

    raw = {"models": {"detector": "models/detector.xml"}, "data-key": value}
    _, problems = parse_options(raw, tmp_path, "tool.hatch.build.targets.wheel.hooks.ovcrypt")
    assert len(problems) == 1
    assert str(problems[0]).startswith(f"`tool.hatch.build.targets.wheel.hooks.ovcrypt.data-key` {why}")


def test_rekey_refuses_a_folder_whose_key_holders_wrap(product: Product, tmp_path: Path) -> None:
    """The holders wrap the old key: a rekeyed folder would lose them, so only a rebuild may change its key."""
    folder = unpack(product.wheel, tmp_path / "site") / "acme_vision" / "_ovcrypt"
    assert_rekey_refused(folder, product.dek, tmp_path, "names key holders, which wrap the old key")


def test_cli_verbs_take_the_key_through_the_data_key_holders(product: Product, tmp_path: Path) -> None:
    """verify, compile and rekey --data-key FILE: the key unwrapped through its holders (an age identity here)."""
    folder = unpack(product.wheel, tmp_path / "site") / "acme_vision" / "_ovcrypt"
    datakey = str(product.root / "keys" / "models.datakey")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OVCRYPT_")}

    def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hatch_ovcrypt", *args], capture_output=True, text=True,
                              check=False, env={**clean, **env})  # fmt: skip

    device = {"OVCRYPT_KEY_AGE_IDENTITY_FILE": str(product.two.file)}
    verified = cli("verify", str(folder), "--data-key", datakey, env=device)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    compiled = cli("compile", str(folder), "--name", "detector", "--data-key", datakey, env=device)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    nobody = cli("verify", str(folder), "--data-key", datakey, env={})
    assert nobody.returncode == 1 and len(nobody.stderr.strip().splitlines()) == 1, nobody.stderr
    assert product.one.recipient in nobody.stderr and "AGE_IDENTITY" in nobody.stderr, nobody.stderr
    key_file = tmp_path / "k"
    key_file.write_text(product.dek.hex())
    both = cli("verify", str(folder), "--data-key", datakey, "--key-file", str(key_file), env=device)
    assert both.returncode == 2 and "give --key-file or --data-key, not both" in both.stderr, both.stderr
    for run in (verified, compiled, nobody, both):
        assert product.dek.hex() not in run.stdout + run.stderr
