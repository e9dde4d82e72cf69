"""Issue 22, end to end for the server holders: a product whose committed data key is held by OpenBao
transit, a SoftHSM2 key-wrapping key or (moto's mock of) AWS KMS, made with `hatch-ovcrypt datakey new`,
built by real hatchling with only that holder's settings in the environment (no raw key anywhere),
installed into a fresh venv, and loaded there through the same holder; a holder that cannot answer at
run time gives one line naming it.

moto is a mock of KMS: the awskms case checks our request shapes and the round trip, not KMS's security.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ovcrypt_runtime._keys.holders import Holder
from ovcrypt_runtime._keys.holders.awskms import AwsKmsHolder
from ovcrypt_runtime._keys.holders.pkcs11 import Pkcs11Holder
from ovcrypt_runtime._keys.holders.transit import TransitHolder
from tests.helpers import build_wheel, make_ir, only_wheel, reference_output, sample_input, write_product
from tests.servers import MotoKms, OpenBao, SoftHsm, free_port
from tests.venvs import Venv

# The data-key build and the datakey CLI (keys-core's half of issue 22); this file needs both halves.
pytest.importorskip("ovcrypt_runtime._keys.holders.datakey", reason="needs the data-key build (issue 22, keys-core)")

MODELS = {"detector": "models/detector.xml"}
MANIFEST = "acme_vision/_ovcrypt/manifest.json"
INFER = """
import json
import numpy as np
from acme_vision._ovcrypt import compile_model
x = np.random.default_rng(123).standard_normal((1, 64)).astype(np.float32)
print(json.dumps(compile_model("detector")(x)[0].tolist()))
"""
pytestmark = pytest.mark.slow


@dataclass
class Setup:
    """One holder: its URI, the environment that reaches it (nothing else), and the same with it unreachable."""

    uri: str
    env: dict[str, str]
    broken_env: dict[str, str]
    holder: Holder
    why_broken: str


@pytest.fixture(params=["transit", "pkcs11", "awskms"])
def setup(request: pytest.FixtureRequest) -> Setup:
    dead = f"http://127.0.0.1:{free_port()}"
    if request.param == "transit":
        bao: OpenBao = request.getfixturevalue("openbao")
        uri = f"transit:{bao.new_transit_key('release-' + os.urandom(4).hex())}"
        return Setup(uri, bao.env, {**bao.env, "BAO_ADDR": dead}, TransitHolder(uri, environ=bao.env), "cannot reach")
    if request.param == "pkcs11":
        hsm: SoftHsm = request.getfixturevalue("softhsm")
        uri = hsm.uri("kek-a", pin=False)
        env = {"OVCRYPT_KEY_PKCS11_PIN": hsm.pin, "SOFTHSM2_CONF": os.environ["SOFTHSM2_CONF"]}
        broken = {**env, "OVCRYPT_KEY_PKCS11_PIN": "not-the-pin"}
        return Setup(uri, env, broken, Pkcs11Holder(uri, environ=env), "the token refused the PIN")
    kms: MotoKms = request.getfixturevalue("moto_kms")
    uri = f"awskms:{kms.key_a}"
    broken = {**kms.env, "AWS_ENDPOINT_URL": dead}
    return Setup(uri, kms.env, broken, AwsKmsHolder(uri, environ=kms.env), "cannot reach KMS")


@pytest.fixture
def holder_env(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's environment has the holder's settings, and no AWS/Vault settings of the developer's."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "VAULT_", "BAO_")):
            monkeypatch.delenv(name)
    for name, value in setup.env.items():
        monkeypatch.setenv(name, value)
    yield


def test_wheel_built_and_loaded_through_the_holder(setup: Setup, holder_env: None, tmp_path: Path) -> None:
    from hatch_ovcrypt.cli import main

    root = write_product(tmp_path / "product", MODELS, extra_hook_options='data-key = "keys/models.datakey"')
    xml = make_ir(root / MODELS["detector"], 64 << 10, seed=7)
    datakey_file = root / "keys" / "models.datakey"
    datakey_file.parent.mkdir()
    assert main(["datakey", "new", "--holder", setup.uri, "--out", str(datakey_file), "--product", "acme-vision"]) == 0
    datakey = json.loads(datakey_file.read_text())
    assert [h["uri"] for h in datakey["holders"]] == [setup.uri] and "pin" not in datakey_file.read_text()
    context = {"product": datakey["product"], "key_id": datakey["key_id"]}
    dek = setup.holder.unwrap(datakey["holders"][0]["stanza"], context)  # only to look for it below

    assert not any(name.startswith("OVCRYPT_KEY") and name != "OVCRYPT_KEY_PKCS11_PIN" for name in os.environ)
    build_wheel(root, {"SOURCE_DATE_EPOCH": "1700000000"})
    wheel = only_wheel(root / "dist")
    with zipfile.ZipFile(wheel) as zf:
        manifest = json.loads(zf.read(MANIFEST))
        blobs = {name: zf.read(name) for name in zf.namelist()}
    assert manifest["holders"] == datakey["holders"] and manifest["key_id"] == datakey["key_id"]
    for name, blob in blobs.items():
        assert dek not in blob and dek.hex().encode() not in blob.lower(), name

    device = Venv(tmp_path / "venv")
    device.pip_install(str(wheel))
    result = device.python_code(INFER, env=setup.env, cwd=tmp_path)
    expected = reference_output(xml, sample_input())
    assert np.array_equal(np.asarray(json.loads(result.stdout), dtype=np.float32), expected)

    broken = device.python_code(INFER, env=setup.broken_env, cwd=tmp_path, check=False)
    last = broken.stderr.strip().splitlines()[-1]
    assert broken.returncode != 0 and "KeyMissingError" in last and setup.uri in last and setup.why_broken in last
    assert dek.hex() not in broken.stderr and setup.env.get("OVCRYPT_KEY_PKCS11_PIN", "\0") not in broken.stderr


def test_datakey_cli_across_server_holders(
    openbao: OpenBao, softhsm: SoftHsm, moto_kms: MotoKms, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """`datakey new/add-holder/rewrap/remove-holder/show` with the three server holders: a PIN given in the URI is
    not stored, and after transit's `rotate` + `datakey rewrap` the old key version can be retired."""
    from hatch_ovcrypt.cli import main

    for name, value in {**openbao.env, **moto_kms.env}.items():
        monkeypatch.setenv(name, value)
    key = openbao.new_transit_key("cli-" + os.urandom(4).hex())
    transit, kms = f"transit:{key}", f"awskms:{moto_kms.key_a}"
    given_pkcs11, pkcs11 = softhsm.uri("kek-a"), softhsm.uri("kek-a", pin=False)
    file = tmp_path / "models.datakey"
    cli = ["datakey", "new", "--holder", transit, "--holder", kms, "--out", str(file), "--product", "acme-vision"]
    assert main(cli) == 0
    assert main(["datakey", "add-holder", str(file), given_pkcs11]) == 0
    doc = json.loads(file.read_text())
    assert [h["uri"] for h in doc["holders"]] == [transit, kms, pkcs11] and "pin" not in file.read_text()
    context = {"product": "acme-vision", "key_id": doc["key_id"]}
    holders: list[Holder] = [TransitHolder(transit), AwsKmsHolder(kms), Pkcs11Holder(given_pkcs11)]
    dek = holders[0].unwrap(doc["holders"][0]["stanza"], context)
    assert all(h.unwrap(e["stanza"], context) == dek for h, e in zip(holders, doc["holders"], strict=True))

    openbao.bao("write", "-f", f"transit/keys/{key}/rotate")
    assert main(["datakey", "rewrap", str(file)]) == 0
    rewrapped = json.loads(file.read_text())
    assert rewrapped["holders"][0]["stanza"]["ciphertext"].startswith("vault:v2:")
    assert rewrapped["holders"][2] == doc["holders"][2]  # a PKCS#11 key has no versions
    openbao.bao("write", f"transit/keys/{key}/config", "min_decryption_version=2")
    assert all(h.unwrap(e["stanza"], context) == dek for h, e in zip(holders, rewrapped["holders"], strict=True))

    assert main(["datakey", "remove-holder", str(file), transit]) == 0
    assert main(["datakey", "show", str(file)]) == 0
    out = capsys.readouterr().out
    shown = out[out.rindex(f"{file}\n") :]  # what `show` printed last
    assert transit not in shown and pkcs11 in shown and kms in shown and doc["key_id"] in shown
    assert dek.hex() not in out and softhsm.pin not in out
