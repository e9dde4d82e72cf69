"""Issue 23: the `pkcs11:` and `transit:` signers against real key stores the suite starts (tests/servers.py):
SoftHSM2 with an ECDSA P-256 key pair, OpenBao transit with an `ecdsa-p256` key. Their signatures are
randomised: only model.sig changes between two builds, every other file stays byte-identical.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from hatch_ovcrypt.hook.writer import render_table
from hatch_ovcrypt.signing import SigningError, signer_for
from ovcrypt_runtime._format.layout import MANIFEST_NAME, SIGNATURE_NAME
from ovcrypt_runtime._keys.signature import verify_signature
from tests.helpers import make_ir
from tests.keyscan import assert_no_key_in_locals
from tests.servers import OpenBao, SoftHsm  # the session fixtures come from conftest.py: one token per process

MODEL_SIGNING = Path(sys.executable).parent / "model_signing"


@pytest.fixture(scope="module")
def hsm_key(softhsm: SoftHsm) -> str:
    """An ECDSA P-256 key pair `publisher` made inside the token; its signing-key URI."""
    import pkcs11
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_named_curve_parameters

    token = pkcs11.lib(softhsm.module).get_token(token_label=softhsm.label)
    with token.open(rw=True, user_pin=softhsm.pin) as session:
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
        )
        params.generate_keypair(store=True, label="publisher")
    query = f"module-path={softhsm.module}&pin-source=file:{softhsm.pin_file}"
    return f"pkcs11:token={softhsm.label};object=publisher?{query}"


def render_twice(tmp_path: Path, uri: str, environ: dict[str, str]) -> tuple[Path, Path]:
    xml = make_ir(tmp_path / "models" / "det.xml")
    key = secrets.token_bytes(32)
    outs = []
    for n in range(2):
        out = tmp_path / f"out{n}" / "_ovcrypt"
        render_table({"models": {"det": str(xml)}, "signing-key": uri}, tmp_path, out, package="acme_vision", key=key,
                     environ=environ)  # fmt: skip
        outs.append(out)
    return outs[0], outs[1]


def check_signed_pair(a: Path, b: Path, public_pem: bytes, tmp_path: Path) -> None:
    """Both folders verify (our verifier and model-signing's); only model.sig differs between them."""
    pub = tmp_path / "publisher.pub"
    pub.write_bytes(public_pem)
    for folder in (a, b):
        verify_signature((folder / SIGNATURE_NAME).read_bytes(), (folder / MANIFEST_NAME).read_bytes(),
                         (public_pem.decode(),), str(folder))  # fmt: skip
        done = subprocess.run([str(MODEL_SIGNING), "verify", "key", str(folder), "--signature",
                               str(folder / SIGNATURE_NAME), "--public_key", str(pub)],
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    differ = [str(p) for p in files if (a / p).read_bytes() != (b / p).read_bytes()]
    assert differ == [SIGNATURE_NAME]  # randomised ECDSA: the signature, and nothing else


def test_pkcs11_signer_softhsm(hsm_key: str, softhsm: SoftHsm, tmp_path: Path) -> None:
    signer = signer_for(hsm_key, os.environ)
    assert not signer.deterministic
    a, b = render_twice(tmp_path, hsm_key, dict(os.environ))
    assert repr(signer.public_pem().decode()) in (a / "_settings.py").read_text()
    check_signed_pair(a, b, signer.public_pem(), tmp_path)


def test_pkcs11_errors_are_one_line_without_the_pin(hsm_key: str, softhsm: SoftHsm) -> None:
    with pytest.raises(SigningError) as info:
        signer_for(hsm_key.replace("object=publisher", "object=nobody"), os.environ)
    assert "\n" not in str(info.value) and softhsm.pin not in str(info.value)
    assert_no_key_in_locals(info.value, softhsm.pin, softhsm.pin.encode())
    bare = hsm_key.split("&pin-source=", maxsplit=1)[0]
    with pytest.raises(SigningError, match="no PIN; set OVCRYPT_SIGNING_PIN, or give pin-source=file:PATH in the URI"):
        signer_for(bare, {})
    wrong_pin = signer_for(bare, {"OVCRYPT_SIGNING_PIN": softhsm.pin})  # the PIN from the environment works
    assert wrong_pin.public_pem().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_transit_signer_openbao(openbao: OpenBao, tmp_path: Path) -> None:
    openbao.new_transit_key("publisher", "type=ecdsa-p256")
    env = {**os.environ, **openbao.env}
    signer = signer_for("transit:publisher", env)
    assert not signer.deterministic
    a, b = render_twice(tmp_path, "transit:publisher", env)
    check_signed_pair(a, b, signer.public_pem(), tmp_path)


def test_transit_errors_are_one_line_without_the_token(openbao: OpenBao) -> None:
    openbao.new_transit_key("not-for-signing")  # aes256-gcm96
    env = {**os.environ, **openbao.env}
    with pytest.raises(SigningError, match="is a aes256-gcm96 key; signing needs type=ecdsa-p256") as info:
        signer_for("transit:not-for-signing", env)
    with pytest.raises(SigningError, match=r"signing-key transit:nobody: .* has no transit key 'nobody'") as missing:
        signer_for("transit:nobody", env)
    for exc in (info.value, missing.value):
        assert "\n" not in str(exc) and openbao.token not in str(exc)
    with pytest.raises(SigningError, match="set VAULT_ADDR and VAULT_TOKEN"):
        signer_for("transit:publisher", {})
