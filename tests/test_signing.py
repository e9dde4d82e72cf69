"""Issue 23: publisher signatures. A holder of the model key cannot make a package that the runtime, `verify`
or model-signing accepts; a product without publisher keys behaves as before.

Real parts only: hatchling builds, the product's own generated runtime (run from the unpacked wheel in a
subprocess, with its rendered `_settings.py`), the real `model_signing` CLI, real cryptography.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hatch_ovcrypt.config import ConfigurationError
from hatch_ovcrypt.hook.writer import encrypt_file, render_table
from hatch_ovcrypt.signing import SigningError
from ovcrypt_runtime._errors import SignatureError
from ovcrypt_runtime._format.layout import MANIFEST_NAME, SIGNATURE_NAME
from ovcrypt_runtime._format.manifest import parse_manifest
from ovcrypt_runtime._format.spec import Role
from ovcrypt_runtime._format.writer import FileSource
from tests.helpers import (
    assert_rekey_refused,
    build_wheel,
    encrypted_path,
    make_ir,
    only_wheel,
    unpack,
    write_product,
)
from tests.keyscan import assert_no_key_in_locals
from tests.test_cpp import Programs, assert_refused_one_line, dump, programs  # noqa: F401  (a session fixture)

PACKAGE = "acme_vision"
MODEL_SIGNING = Path(sys.executable).parent / "model_signing"
LOAD = f"""
import numpy as np, {PACKAGE}
compiled = {PACKAGE}.compile_model("det")
print("ok", compiled(np.ones((1, 64), np.float32))[0].shape)
"""


def keygen(out: Path) -> Path:
    """`hatch-ovcrypt keygen --signing --out FILE`; returns FILE.pub."""
    subprocess.run([sys.executable, "-m", "hatch_ovcrypt", "keygen", "--signing", "--out", str(out)],
                   check=True, capture_output=True, text=True)  # fmt: skip
    return out.with_name(out.name + ".pub")


def load(site: Path, key: bytes) -> subprocess.CompletedProcess[str]:
    """Run the product's own runtime from an unpacked wheel: its `_settings.py` pins its publisher keys."""
    env = {**os.environ, "PYTHONPATH": str(site), "OVCRYPT_KEY": key.hex()}
    return subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, check=False)


def verify_cli(folder: Path, key: bytes, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OVCRYPT_KEY": key.hex()}
    cmd = [sys.executable, "-m", "hatch_ovcrypt", "verify", str(folder), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)


def model_signing_verify(folder: Path, pub: Path) -> subprocess.CompletedProcess[str]:
    cmd = [str(MODEL_SIGNING), "verify", "key", str(folder), "--signature", str(folder / SIGNATURE_NAME),
           "--public_key", str(pub)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    return done.stderr.strip().splitlines()[-1]


class Product:
    def __init__(self, root: Path, key: bytes, site: Path) -> None:
        self.root, self.key, self.site = root, key, site

    @property
    def folder(self) -> Path:
        return self.site / PACKAGE / "_ovcrypt"

    def fresh_copy(self, dest: Path) -> Path:
        shutil.copytree(self.site, dest)
        return dest / PACKAGE / "_ovcrypt"


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Product:
    """A product signed with keys/publisher.pem (made by keygen), its wheel built and unpacked."""
    root = tmp_path_factory.mktemp("signed")
    make_ir(root / "models" / "det.xml")
    (root / "keys").mkdir()
    keygen(root / "keys" / "publisher.pem")
    write_product(root, {"det": "models/det.xml"}, extra_hook_options='signing-key = "file:keys/publisher.pem"')
    key = secrets.token_bytes(32)
    build_wheel(root, {"OVCRYPT_KEY": key.hex()})
    return Product(root, key, unpack(only_wheel(root / "dist"), root / "site"))


def forge(product: Product, dest: Path, *, signer: Path | None) -> Path:
    """What a holder of the model key can do: render other weights for the model under the same key, signed by
    another key (or unsigned), and put its manifest, models and signature over a copy of the installed folder."""
    folder = product.fresh_copy(dest / "site")
    forged = dest / "forged"
    raw: dict[str, object] = {"models": {"det": str(make_ir(dest / "evil" / "det.xml", seed=666))}}
    if signer is not None:
        raw["signing-key"] = f"file:{signer}"
    render_table(raw, dest, forged, package=PACKAGE, key=product.key, environ=os.environ)
    shutil.rmtree(folder / "models")
    shutil.copytree(forged / "models", folder / "models")
    shutil.copy(forged / MANIFEST_NAME, folder / MANIFEST_NAME)
    (folder / SIGNATURE_NAME).unlink()
    if signer is not None:
        shutil.copy(forged / SIGNATURE_NAME, folder / SIGNATURE_NAME)
    return folder


def test_keygen_writes_private_key_0600_and_public_key(tmp_path: Path) -> None:
    pub = keygen(tmp_path / "k.pem")
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    again = [sys.executable, "-m", "hatch_ovcrypt", "keygen", "--signing", "--out", str(tmp_path / "k.pem")]
    done = subprocess.run(again, capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "refusing to overwrite" in done.stderr


def test_signed_product_loads_and_pins_its_signing_key(signed: Product) -> None:
    settings = (signed.folder / "_settings.py").read_text()
    public = (signed.root / "keys" / "publisher.pem.pub").read_text()
    assert repr((public,)) in settings  # the default: the signing key's own public key
    assert (signed.folder / "_keys" / "signature.py").is_file()  # only signing products ship the verifier
    done = load(signed.site, signed.key)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr
    ok = verify_cli(signed.folder, signed.key)
    assert ok.returncode == 0 and "and by its publisher (1 key(s) checked)" in ok.stdout, ok.stderr


def test_model_signing_verifies_the_installed_folder(signed: Product, tmp_path: Path) -> None:
    """The real `model_signing verify key` accepts the folder with the __pycache__ folders pip's install writes."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(signed.folder)], check=True)
    assert any(signed.folder.rglob("__pycache__/*.pyc"))
    done = model_signing_verify(signed.folder, signed.root / "keys" / "publisher.pem.pub")
    assert done.returncode == 0 and "Verification succeeded" in done.stdout, done.stdout + done.stderr
    other = keygen(tmp_path / "other.pem")
    assert model_signing_verify(signed.folder, other).returncode != 0


def test_resigned_by_another_key_is_refused_everywhere(signed: Product, tmp_path: Path) -> None:
    """A holder of the model key re-encrypts the model (right key) and signs it with its own key."""
    attacker = tmp_path / "attacker.pem"
    keygen(attacker)
    folder = forge(signed, tmp_path, signer=attacker)
    done = load(folder.parent.parent, signed.key)
    assert done.returncode != 0
    assert "SignatureError" in done.stderr and "does not verify under any of the 1 publisher key(s)" in done.stderr
    refused = verify_cli(folder, signed.key)
    assert refused.returncode != 0
    assert "model.sig does not verify under any of the 1 publisher key(s)" in refused.stderr
    assert "\n" not in refused.stderr.strip().splitlines()[0]
    assert model_signing_verify(folder, signed.root / "keys" / "publisher.pem.pub").returncode != 0


def test_unsigned_package_is_refused_when_a_key_is_pinned(signed: Product, tmp_path: Path) -> None:
    folder = forge(signed, tmp_path, signer=None)
    done = load(folder.parent.parent, signed.key)
    assert done.returncode != 0 and f"has no {SIGNATURE_NAME}, but this package pins 1 publisher key(s)" in done.stderr
    assert verify_cli(folder, signed.key).returncode != 0


def test_manifest_swapped_under_the_publisher_signature_is_refused(signed: Product, tmp_path: Path) -> None:
    """The publisher's own model.sig kept, the manifest and models replaced by a re-encryption under the key."""
    folder = forge(signed, tmp_path, signer=None)
    shutil.copy(signed.folder / SIGNATURE_NAME, folder / SIGNATURE_NAME)
    done = load(folder.parent.parent, signed.key)
    assert done.returncode != 0 and "manifest.json is not the one the publisher signed" in done.stderr


def forge_one_file(product: Product, dest: Path) -> Path:
    """With the model key one can write other weights into a file whose header matches the signed manifest's
    entry (name, role, salt, size): only its SHA-256, which the signature covers, tells it apart."""
    folder = product.fresh_copy(dest / "site")
    entry = parse_manifest((folder / MANIFEST_NAME).read_bytes()).models["det"].files["det.bin"]
    other = make_ir(dest / "other" / "det.xml", seed=7)
    forged = encrypt_file(product.key, FileSource(other.with_suffix(".bin")), dest / "det.bin.ovc",
                          name="det", role=Role.BIN, salt=bytes.fromhex(entry.salt))  # fmt: skip
    assert forged.size == entry.size and forged.salt == entry.salt and forged.sha256 != entry.sha256
    shutil.copy(dest / "det.bin.ovc", encrypted_path(folder, "det", Role.BIN))
    return folder


def test_one_file_forged_with_the_same_salt_and_size_is_refused(signed: Product, tmp_path: Path) -> None:
    folder = forge_one_file(signed, tmp_path)
    done = load(folder.parent.parent, signed.key)
    assert done.returncode != 0 and "is not the file the publisher signed" in done.stderr, done.stderr
    assert verify_cli(folder, signed.key).returncode != 0


def test_rotation_two_pinned_keys(tmp_path: Path) -> None:
    """publisher-keys pins the old and the new key: a package signed with either loads."""
    root = tmp_path / "p"
    make_ir(root / "models" / "det.xml")
    (root / "keys").mkdir()
    old, new = keygen(root / "keys" / "old.pem"), keygen(root / "keys" / "new.pem")
    key = secrets.token_bytes(32)
    for signer in ("old", "new"):
        options = f'signing-key = "file:keys/{signer}.pem"\npublisher-keys = ["keys/{old.name}", "keys/{new.name}"]'
        write_product(root, {"det": "models/det.xml"}, extra_hook_options=options)
        build_wheel(root, {"OVCRYPT_KEY": key.hex()}, outdir=tmp_path / f"dist-{signer}")
        site = unpack(only_wheel(tmp_path / f"dist-{signer}"), tmp_path / f"site-{signer}")
        done = load(site, key)
        assert done.returncode == 0, done.stderr
        assert verify_cli(site / PACKAGE / "_ovcrypt", key, "--publisher-key", str(root / "keys" / f"{signer}.pem.pub")
                          ).returncode == 0  # fmt: skip


def test_deterministic_signature_and_no_signature_without_keys(tmp_path: Path) -> None:
    """Two renders with a file key give the same model.sig (RFC 6979); no signing-key: no signature, no pins."""
    xml = make_ir(tmp_path / "models" / "det.xml")
    keygen(tmp_path / "k.pem")
    key = secrets.token_bytes(32)
    sigs = []
    for n in range(2):
        raw = {"models": {"det": str(xml)}, "signing-key": "file:k.pem"}
        render_table(raw, tmp_path, tmp_path / f"out{n}", package=PACKAGE, key=key, environ=os.environ)
        sigs.append((tmp_path / f"out{n}" / SIGNATURE_NAME).read_bytes())
    assert sigs[0] == sigs[1]
    render_table({"models": {"det": str(xml)}}, tmp_path, tmp_path / "plain", package=PACKAGE, key=key,
                 environ=os.environ)  # fmt: skip
    assert not (tmp_path / "plain" / SIGNATURE_NAME).exists()
    assert "PUBLISHER_KEYS: tuple[str, ...] = ()" in (tmp_path / "plain" / "_settings.py").read_text()


def test_configuration_errors(tmp_path: Path) -> None:
    xml = make_ir(tmp_path / "models" / "det.xml")
    pub = keygen(tmp_path / "k.pem")
    other = keygen(tmp_path / "other.pem")
    key = secrets.token_bytes(32)

    def render(**options: object) -> None:
        raw = {"models": {"det": str(xml)}, **{k.replace("_", "-"): v for k, v in options.items()}}
        render_table(raw, tmp_path, tmp_path / secrets.token_hex(4), package=PACKAGE, key=key, environ=os.environ)

    with pytest.raises(ConfigurationError, match="needs `signing-key`"):
        render(publisher_keys=[pub.name])
    with pytest.raises(ConfigurationError, match="must be a URI"):
        render(signing_key="k.pem")
    (tmp_path / "not.pub").write_text("hello")
    with pytest.raises(ConfigurationError, match=r"not\.pub: is not a PEM public key"):
        render(signing_key="file:k.pem", publisher_keys=["not.pub"])
    with pytest.raises(SigningError, match="its public key is not among `publisher-keys`") as info:
        render(signing_key="file:k.pem", publisher_keys=[other.name])
    private = (tmp_path / "k.pem").read_text()
    assert_no_key_in_locals(info.value, private, private.encode())
    with pytest.raises(SigningError, match="is not an unencrypted PEM private key") as info:
        render(signing_key=f"file:{pub.name}")
    assert "\n" not in str(info.value)


def test_build_output_has_no_private_key(signed: Product, tmp_path: Path) -> None:
    """The build's output and the wheel never hold the private key (nor its PEM); a rebuild is byte-identical."""
    private = (signed.root / "keys" / "publisher.pem").read_text()
    body = "".join(private.strip().splitlines()[1:-1])
    done = build_wheel(signed.root, {"OVCRYPT_KEY": signed.key.hex()}, outdir=tmp_path)
    # Deterministic ECDSA: the rebuilt wheel is byte-identical, model.sig included.
    assert only_wheel(tmp_path).read_bytes() == only_wheel(signed.root / "dist").read_bytes()
    assert "PRIVATE KEY" not in done.stdout + done.stderr and body[:40] not in done.stdout + done.stderr
    for path in signed.site.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"PRIVATE KEY" not in data and body[:40].encode() not in data, path


def test_signature_error_is_an_ovcrypt_error() -> None:
    from ovcrypt_runtime._errors import OvcryptError

    assert issubclass(SignatureError, OvcryptError)


def test_cpp_reader_checks_the_signature(programs: Programs, signed: Product, tmp_path: Path) -> None:  # noqa: F811
    """The C++ reader (`ovcrypt_dump --publisher-key PEM`) reads the publisher's package and refuses the forgery,
    the unsigned package, a manifest swapped under the signature and a forged file, each with one line."""
    pub = str(signed.root / "keys" / "publisher.pem.pub")
    tools = programs
    ok = dump(tools, signed.folder, "det", "--publisher-key", pub, key=signed.key)
    assert ok.code == 0 and "compiled det" in ok.stdout, ok.stderr
    attacker = tmp_path / "a" / "attacker.pem"
    attacker.parent.mkdir()
    keygen(attacker)
    forged = forge(signed, tmp_path / "a", signer=attacker)
    line = assert_refused_one_line(dump(tools, forged, "det", "--publisher-key", pub, key=signed.key), "SignatureError")
    assert "model.sig does not verify under any of the 1 publisher key(s)" in line
    unsigned = forge(signed, tmp_path / "u", signer=None)
    refused = dump(tools, unsigned, "det", "--publisher-key", pub, key=signed.key)
    line = assert_refused_one_line(refused, "SignatureError")
    assert "has no model.sig" in line
    swapped = forge(signed, tmp_path / "s", signer=None)
    shutil.copy(signed.folder / SIGNATURE_NAME, swapped / SIGNATURE_NAME)
    line = assert_refused_one_line(dump(tools, swapped, "det", "--publisher-key", pub), "SignatureError")  # no key
    assert "manifest.json is not the one the publisher signed" in line
    # Rotation: either of two pinned keys will do; without --publisher-key the reader behaves as before.
    rotated = dump(tools, signed.folder, "det", "--publisher-key", str(attacker) + ".pub", "--publisher-key", pub,
                   key=signed.key)  # fmt: skip
    assert rotated.code == 0, rotated.stderr
    assert dump(tools, forged, "det", key=signed.key).code == 0
    one_file = forge_one_file(signed, tmp_path / "f")
    line = assert_refused_one_line(dump(tools, one_file, "det", "--publisher-key", pub), "SignatureError")
    assert "det.bin.ovc: is not the file the publisher signed" in line


def test_check_reports_the_signing_settings_and_refuses_a_bad_key(tmp_path: Path) -> None:
    """`hatch-ovcrypt check` reaches the signer as the build would: a bad key is one line, before any build."""
    make_ir(tmp_path / "models" / "det.xml")
    (tmp_path / "keys").mkdir()
    keygen(tmp_path / "keys" / "publisher.pem")
    (tmp_path / "keys" / "bad.pem").write_text("not a key\n")
    env = {**os.environ, "OVCRYPT_KEY": secrets.token_hex(32)}
    check = [sys.executable, "-m", "hatch_ovcrypt", "check", str(tmp_path)]
    write_product(tmp_path, {"det": "models/det.xml"}, extra_hook_options='signing-key = "file:keys/publisher.pem"')
    ok = subprocess.run(check, env=env, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "signing-key" in ok.stdout and "publisher-keys         the signing key's own" in ok.stdout
    write_product(tmp_path, {"det": "models/det.xml"}, extra_hook_options='signing-key = "file:keys/bad.pem"')
    bad = subprocess.run(check, env=env, capture_output=True, text=True, check=False)
    assert bad.returncode != 0
    assert "signing-key` file:" in bad.stderr and "is not an unencrypted PEM private key" in bad.stderr


def test_rekey_refuses_a_signed_folder(signed: Product, tmp_path: Path) -> None:
    """model.sig signs the old manifest: a rekeyed folder would fail its own signature check."""
    folder = signed.fresh_copy(tmp_path / "site")
    assert_rekey_refused(folder, signed.key, tmp_path, "is signed by its publisher (model.sig signs the old manifest)")


@pytest.mark.parametrize(("uri", "module", "extra"), [
    ("transit:publisher", "hvac", "transit"),
    ("pkcs11:token=t;object=publisher?module-path=/m.so&pin-value=1", "pkcs11", "pkcs11"),
])  # fmt: skip
def test_a_signer_without_its_client_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, uri: str, module: str, extra: str
) -> None:
    from hatch_ovcrypt.signing import signer_for

    monkeypatch.setitem(sys.modules, module, None)  # what `import module` sees when it is not installed
    with pytest.raises(SigningError, match=rf"needs .*pip install 'hatch-ovcrypt\[{extra}\]'") as info:
        signer_for(uri, {"VAULT_ADDR": "http://127.0.0.1:1", "VAULT_TOKEN": "t"})
    assert "\n" not in str(info.value) and "pin-value=1" not in str(info.value)
