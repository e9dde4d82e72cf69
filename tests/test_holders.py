"""Issue 22: key holders, the wrapped data key file, age interoperability and `hatch-ovcrypt datakey`.

The age holder is checked against the real tools: Debian's `age`/`age-keygen` (installed by .ci/run)
and pyrage (the test extra), in both directions.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pyrage
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyrage import x25519

from hatch_ovcrypt.cli import main
from ovcrypt_runtime._errors import KeyFormatError, KeyMissingError, ManifestError, WrongKeyError
from ovcrypt_runtime._format.manifest import HolderEntry, Manifest, parse_manifest
from ovcrypt_runtime._format.spec import key_id
from ovcrypt_runtime._keys.holders import (
    HolderUnavailableError,
    _bech32,
    age,
    display_uri,
    holder_for,
    unwrap_first,
)
from ovcrypt_runtime._keys.holders.datakey import DataKey, entry, parse_datakey, read_datakey
from tests.keyscan import assert_no_key_in_locals

AGE = shutil.which("age")
needs_age = pytest.mark.skipif(AGE is None, reason="Debian's age is not installed (.ci/run installs it)")


@dataclass
class Identity:
    secret: str  # AGE-SECRET-KEY-1…
    recipient: str  # age1…
    file: Path  # as age-keygen writes it


def keygen(folder: Path, name: str) -> Identity:
    """A fresh identity from the real `age-keygen`, or (without it) from pyrage."""
    path = folder / f"{name}.txt"
    if shutil.which("age-keygen"):
        subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
        text = path.read_text()
        secret = next(line for line in text.splitlines() if line.startswith("AGE-SECRET-KEY-1"))
        recipient = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True)
        return Identity(secret, recipient.stdout.strip(), path)
    ident = x25519.Identity.generate()
    path.write_text(f"# public key: {ident.to_public()}\n{ident}\n")
    return Identity(str(ident), str(ident.to_public()), path)


@pytest.fixture
def ids(tmp_path: Path) -> tuple[Identity, Identity]:
    return keygen(tmp_path, "one"), keygen(tmp_path, "two")


# --- bech32 (BIP-173 vectors) and age keys -----------------------------------------------------

VALID = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11" + "q" * 82 + "c8247j",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]
INVALID = [
    "\x201nwldj5",
    "\x7f1axkwrx",
    "\x801eym55h",
    "an84characterslonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1569pvx",
    "pzry9x0s0muk",
    "1pzry9x0s0muk",
    "x1b4n0q5v",
    "li1dgmt3",
    "de1lg7wt\xff",
    "A1G7SGD8",
    "10a06t8",
    "1qzzfhee",
]


@pytest.mark.parametrize("text", VALID)
def test_bech32_valid_vectors(text: str) -> None:
    hrp, words = _bech32.decode_words(text)
    assert hrp == text.lower()[: text.rfind("1")]
    if len(words) % 8 == 0:  # re-encodes to the same text (in lower case)
        data = bytes(_bech32._convert_bits(words, 5, 8, pad=False))
        assert _bech32.encode(hrp, data) == text.lower()


@pytest.mark.parametrize("text", INVALID)
def test_bech32_invalid_vectors(text: str) -> None:
    with pytest.raises(_bech32.Bech32Error):
        _bech32.decode_words(text)


def test_age_keygen_keys_decode_and_match(ids: tuple[Identity, Identity]) -> None:
    for ident in ids:
        (secret,) = age.parse_identities(ident.file.read_text(), "file")  # comments skipped
        assert age.recipient_of(secret) == ident.recipient
        assert _bech32.encode(age.IDENTITY_HRP, secret).upper() == ident.secret
        assert len(age.parse_recipient(ident.recipient)) == 32


def test_bad_recipients_and_identities_are_one_line_without_the_secret(ids: tuple[Identity, Identity]) -> None:
    one = ids[0]
    flipped = one.recipient[:-1] + ("q" if one.recipient[-1] != "q" else "p")
    cases = ((flipped, "wrong checksum"), (one.recipient.upper(), "lower case"), ("age1xyz", "not an age recipient"))
    for uri, why in cases:
        with pytest.raises(KeyFormatError, match=why) as info:
            holder_for(uri, "OVCRYPT_KEY")
        assert "\n" not in str(info.value)
    bad_secret = one.secret[:-1] + ("Q" if one.secret[-1] != "Q" else "P")
    with pytest.raises(KeyFormatError, match="line 1, is not an age identity") as info:
        age.parse_identities(bad_secret, "environment variable X")
    assert one.secret[16:] not in str(info.value) and bad_secret[16:] not in str(info.value)


# --- interoperability with age and pyrage -------------------------------------------------------


@needs_age
def test_our_stanza_decrypts_with_age_and_pyrage(ids: tuple[Identity, Identity]) -> None:
    dek = secrets.token_bytes(32)
    stanza = holder_for(ids[0].recipient, "OVCRYPT_KEY").wrap(dek, {})
    out = subprocess.run([AGE or "age", "-d", "-i", str(ids[0].file)], input=stanza["age"].encode(),
                         capture_output=True, check=True)  # fmt: skip
    assert out.stdout == dek.hex().encode() + b"\n"
    plain = pyrage.decrypt(age.dearmor(stanza["age"]), [x25519.Identity.from_str(ids[0].secret)])
    assert plain == dek.hex().encode() + b"\n"
    wrong = subprocess.run([AGE or "age", "-d", "-i", str(ids[1].file)], input=stanza["age"].encode(),
                           capture_output=True, check=False)  # fmt: skip
    assert wrong.returncode != 0


@needs_age
@pytest.mark.parametrize("writer", ["age -r", "age -a -r, two recipients", "pyrage, grease"])
def test_age_files_by_age_and_pyrage_unwrap_with_ours(
    writer: str, ids: tuple[Identity, Identity], monkeypatch: pytest.MonkeyPatch
) -> None:
    dek = secrets.token_bytes(32)
    payload = dek.hex().encode() + b"\n"
    if writer == "age -r":
        binary = subprocess.run([AGE or "age", "-r", ids[1].recipient], input=payload, capture_output=True,
                                check=True).stdout  # fmt: skip
        text = age.armor(binary)
    elif writer.startswith("age -a"):
        text = subprocess.run([AGE or "age", "-a", "-r", ids[1].recipient, "-r", ids[0].recipient], input=payload,
                              capture_output=True, check=True).stdout.decode()  # fmt: skip
    else:  # rage writes grease stanzas of other types, which readers skip
        recipients = [x25519.Recipient.from_str(ids[0].recipient), x25519.Recipient.from_str(ids[1].recipient)]
        text = age.armor(pyrage.encrypt(payload, recipients))
    holder = holder_for(ids[1].recipient, "OVCRYPT_KEY")
    monkeypatch.setenv("OVCRYPT_KEY_AGE_IDENTITY_FILE", str(ids[1].file))
    assert holder.unwrap({"age": text}, {}) == dek


def test_edited_age_stanza_is_refused(ids: tuple[Identity, Identity], monkeypatch: pytest.MonkeyPatch) -> None:
    dek = secrets.token_bytes(32)
    holder = holder_for(ids[0].recipient, "OVCRYPT_KEY")
    binary = bytearray(age.dearmor(holder.wrap(dek, {})["age"]))
    monkeypatch.setenv("OVCRYPT_KEY_AGE_IDENTITY", ids[0].secret)
    for offset, why in ((len(binary) - 5, "payload failed authentication"), (8, "not an age v1 file")):
        edited = bytearray(binary)
        edited[offset] ^= 1
        with pytest.raises(KeyFormatError, match=why):
            holder.unwrap({"age": age.armor(bytes(edited))}, {})


# --- the registry --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    ["pkcs11:token=t;object=k;pin-value=1234", "pkcs11:token=t;object=k?module-path=/m.so&pin-value=1234",
     "pkcs11:token=t;object=k?PIN-VALUE=1234&module-path=/m.so", "pkcs11:pin-value=1234;token=t"],
)  # fmt: skip
def test_a_pin_value_is_never_shown(uri: str) -> None:
    shown = display_uri(uri)
    assert "1234" not in shown and "token=t" in shown


def test_unknown_scheme_and_missing_client_library_are_one_line() -> None:
    with pytest.raises(KeyFormatError, match="is not a key holder"):
        holder_for("gcpkms:projects/p/keys/k", "OVCRYPT_KEY")
    if importlib.util.find_spec("ovcrypt_runtime._keys.holders.transit") is None:
        return  # the transit holder is another branch's (keys-servers)
    if importlib.util.find_spec("hvac") is None:
        with pytest.raises(HolderUnavailableError, match=r"install hvac to use this holder \(pip install hvac\)"):
            holder_for("transit:models", "OVCRYPT_KEY")


# --- the wrapped data key file and the manifest's holders ---------------------------------------


def _datakey(ids: tuple[Identity, ...], dek: bytes) -> DataKey:
    kid = key_id(dek).hex()
    holders = [holder_for(i.recipient, "OVCRYPT_KEY") for i in ids]
    return DataKey(kid, "acme-vision", tuple(entry(h.uri, h.wrap(dek, {})) for h in holders))


def test_datakey_file_round_trip_and_strict_fields(ids: tuple[Identity, Identity]) -> None:
    dk = _datakey(ids, secrets.token_bytes(32))
    data = dk.to_json()
    assert parse_datakey(data, "f") == dk
    doc = json.loads(data)
    assert list(doc) == sorted(doc) and doc["format"] == "hatch-ovcrypt-datakey/1"
    cases = [
        ({**doc, "dek": "00"}, "unknown field 'dek'"),
        ({**doc, "key_id": "XY"}, "`key_id` must be"),
        ({**doc, "holders": []}, "`holders` must be a list of 1 to"),
        ({**doc, "holders": [doc["holders"][0]] * 2}, "repeats uri"),
        ({**doc, "holders": [{"uri": "pkcs11:token=t;object=k;pin-value=1234", "stanza": {"w": "x"}}]}, "pin-value"),
        ({**doc, "holders": [{**doc["holders"][0], "extra": 1}]}, "exactly uri and stanza"),
        ({**doc, "format": "hatch-ovcrypt-datakey/2"}, "`format` is not"),
    ]
    for bad, why in cases:
        with pytest.raises(KeyFormatError, match=why) as info:
            parse_datakey(json.dumps(bad).encode(), "keys/models.datakey")
        assert "\n" not in str(info.value) and "1234" not in str(info.value)
    unknown = {**doc, "holders": [{"uri": "gcpkms:projects/p", "stanza": {"w": "x"}}]}
    with pytest.raises(KeyFormatError, match="scheme 'gcpkms', which this reader does not know"):
        parse_datakey(json.dumps(unknown).encode(), "f")


def test_manifest_holders_are_signed_and_optional(ids: tuple[Identity, Identity]) -> None:
    dek = secrets.token_bytes(32)
    dk = _datakey(ids, dek)
    plain = Manifest("gen", dk.key_id, {}).signed(dek)
    assert b"holders" not in plain.to_json()  # a build without data-key writes what it always wrote
    signed = Manifest("gen", dk.key_id, {}, holders=dk.holders, product=dk.product).signed(dek)
    parsed = parse_manifest(signed.to_json())
    assert parsed.holders == dk.holders and parsed.product == "acme-vision"
    parsed.verify(dek)
    doc = json.loads(signed.to_json())
    doc["holders"] = doc["holders"][:1]  # a removed holder is an edit the MAC sees
    with pytest.raises(ManifestError, match="failed authentication"):
        parse_manifest(json.dumps(doc).encode()).verify(dek)
    doc["holders"] = [{"uri": "gcpkms:projects/p", "stanza": {"w": "x"}}]
    with pytest.raises(ManifestError, match="scheme 'gcpkms', which this reader does not know"):
        parse_manifest(json.dumps(doc).encode())


def test_unwrap_first_tries_in_order_and_says_why_each_failed(
    ids: tuple[Identity, Identity], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dek = secrets.token_bytes(32)
    dk = _datakey((ids[0],), dek)
    with pytest.raises(KeyMissingError, match=r"no key holder could unwrap.*set OVCRYPT_KEY_AGE_IDENTITY") as missing:
        unwrap_first(dk.holders, dk.context(), "OVCRYPT_KEY", "label")
    assert "\n" not in str(missing.value)
    third = keygen(tmp_path, "three")
    monkeypatch.setenv("OVCRYPT_KEY_AGE_IDENTITY", third.secret)  # a wrong identity
    with pytest.raises(WrongKeyError, match=f"the age identity offered here \\({third.recipient}\\)") as info:
        unwrap_first(dk.holders, dk.context(), "OVCRYPT_KEY", "label")
    assert_no_key_in_locals(info.value, dek, third.secret, age.parse_identities(third.secret, "x")[0])
    monkeypatch.setenv("OVCRYPT_KEY_AGE_IDENTITY", ids[0].secret)
    assert unwrap_first(dk.holders, dk.context(), "OVCRYPT_KEY", "label") == dek
    other = secrets.token_bytes(32)  # a stanza of another data key under the same recipient
    swapped = (HolderEntry(ids[0].recipient, holder_for(ids[0].recipient, "OVCRYPT_KEY").wrap(other, {})),)
    with pytest.raises(WrongKeyError, match="gave a key of another key id") as info:
        unwrap_first(swapped, dk.context(), "OVCRYPT_KEY", "label")
    assert_no_key_in_locals(info.value, other, dek)


# --- the CLI -------------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@needs_age
def test_datakey_cli_new_add_remove_rewrap_show(
    tmp_path: Path, ids: tuple[Identity, Identity], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = ids
    path = tmp_path / "keys" / "models.datakey"
    code, out = run_cli(capsys, "datakey", "new", "--holder", one.recipient, "--out", path, "--product", "acme")
    assert code == 0 and "key id" in out
    armored = json.loads(path.read_text())["holders"][0]["stanza"]["age"].encode()
    decrypted = subprocess.run([AGE or "age", "-d", "-i", one.file], input=armored, check=True, capture_output=True)
    dek = bytes.fromhex(decrypted.stdout.decode())
    assert read_datakey(path).key_id == key_id(dek).hex()
    outputs = [out]
    code, out = run_cli(capsys, "datakey", "new", "--holder", one.recipient, "--out", path, "--product", "acme")
    assert code == 2 and "exists" in out  # never replaces a data key
    code, out = run_cli(capsys, "datakey", "add-holder", path, two.recipient)
    assert code == 1 and "OVCRYPT_KEY_AGE_IDENTITY" in out  # no holder can unwrap here
    outputs.append(out)
    monkeypatch.setenv("OVCRYPT_KEY_AGE_IDENTITY_FILE", str(one.file))
    code, out = run_cli(capsys, "datakey", "add-holder", path, two.recipient)
    assert code == 0
    outputs.append(out)
    stanza_two = json.loads(path.read_text())["holders"][1]["stanza"]["age"]
    assert subprocess.run([AGE or "age", "-d", "-i", str(two.file)], input=stanza_two.encode(), check=True,
                          capture_output=True).stdout.strip() == dek.hex().encode()  # fmt: skip
    before = path.read_bytes()
    code, out = run_cli(capsys, "datakey", "rewrap", path)
    assert code == 0 and "0 of 2" in out and path.read_bytes() == before  # age: nothing to rotate
    code, out = run_cli(capsys, "datakey", "remove-holder", path, one.recipient)
    assert code == 0 and "releases built before still carry it" in out
    code, out = run_cli(capsys, "datakey", "add-holder", path, one.recipient)  # identity one no longer unwraps
    assert code == 1 and "is not this recipient" in out
    outputs.append(out)
    code, out = run_cli(capsys, "datakey", "remove-holder", path, two.recipient)
    assert code == 2 and "only holder" in out
    code, out = run_cli(capsys, "datakey", "show", path)
    assert code == 0 and two.recipient in out and one.recipient not in out and key_id(dek).hex() in out
    outputs.append(out)
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert leftovers == []  # atomic writes left no temporary file
    for text in [*outputs, path.read_text()]:
        assert dek.hex() not in text.lower() and one.secret not in text and two.secret not in text


def test_datakey_cli_refuses_bad_holders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "k.datakey"
    code, out = run_cli(capsys, "datakey", "new", "--holder", "age1nope", "--out", out_file, "--product", "p")
    assert code == 1 and "not an age recipient" in out and not out_file.exists()
    code, out = run_cli(capsys, "datakey", "new", "--holder", "s3:bucket", "--out", out_file, "--product", "p")
    assert code == 1 and "is not a key holder" in out and not out_file.exists()
    os.chdir(tmp_path)  # no pyproject.toml here: the product must be named
    code, out = run_cli(capsys, "datakey", "new", "--holder", keygen(tmp_path, "x").recipient, "--out", out_file)
    assert code == 2 and "--product" in out


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(["format", "key_id", "product", "holders", "extra"]), value=JSON)
def test_any_edit_of_a_datakey_file_is_one_clear_error(field: str, value: object) -> None:
    doc: dict[str, object] = {"format": "hatch-ovcrypt-datakey/1", "key_id": "0" * 32, "product": "p",
           "holders": [{"uri": "transit:k", "stanza": {"ciphertext": "vault:v1:x"}}]}  # fmt: skip
    doc[field] = value
    try:
        parse_datakey(json.dumps(doc).encode(), "f")
    except KeyFormatError as exc:
        assert "\n" not in str(exc)
    manifest = {"format": "hatch-ovcrypt-manifest/2", "generator": "g", "key_id": "0" * 32, "models": {},
                "mac": "0" * 64, "holders": doc["holders"], "product": doc["product"]}  # fmt: skip
    try:
        parse_manifest(json.dumps(manifest).encode())
    except ManifestError as exc:
        assert "\n" not in str(exc)
