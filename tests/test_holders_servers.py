"""Issue 22: the key holders that need a server or a token, against real ones the suite starts itself.

transit: OpenBao 2.7.2 (`bao server -dev`); pkcs11: SoftHSM 2.6.1; awskms: moto in server mode. Each
holder wraps and unwraps a data key (DEK); a wrong KEK, a stopped server, a refused PIN or token, an
unknown key and a retired key version each give one clear line naming the URI, and no error's
traceback holds the DEK (raw, hex or base64), the PIN or a KEK the test knows in its frames' locals (tests/keyscan.py).
"""

from __future__ import annotations

import base64
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ovcrypt_runtime._errors import IntegrityError, KeyMissingError, OvcryptError, WrongKeyError
from ovcrypt_runtime._keys.holders import Holder, HolderUnavailableError
from ovcrypt_runtime._keys.holders.awskms import AwsKmsHolder
from ovcrypt_runtime._keys.holders.awskms import parse_uri as parse_awskms
from ovcrypt_runtime._keys.holders.pkcs11 import Pkcs11Holder
from ovcrypt_runtime._keys.holders.pkcs11 import parse_uri as parse_pkcs11
from ovcrypt_runtime._keys.holders.transit import TransitHolder
from ovcrypt_runtime._keys.holders.transit import parse_uri as parse_transit
from tests.keyscan import assert_no_key_in_locals
from tests.servers import MotoKms, OpenBao, SoftHsm, free_port, running_openbao

CONTEXT = {"product": "acme-vision", "key_id": "00112233445566778899aabbccddeeff"}


@pytest.fixture
def dek() -> bytes:
    return secrets.token_bytes(32)


def secrets_of(dek: bytes) -> tuple[bytes, str]:
    """The DEK and its base64 text (what transit and the stanzas carry), to look for in locals."""
    return dek, base64.b64encode(dek).decode()


def one_line_error(info: pytest.ExceptionInfo[OvcryptError], uri: str, dek: bytes, *extra: bytes | str) -> str:
    """The error's message: one line, naming `uri`, without the DEK (any form) in it or in traceback locals."""
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"holder {uri}: "), message
    for secret in (*secrets_of(dek), dek.hex(), *extra):
        assert (secret.decode("latin-1") if isinstance(secret, bytes) else secret) not in message
    assert_no_key_in_locals(info.value, *secrets_of(dek), *extra)
    return message


def round_trip(holder: Holder, dek: bytes) -> dict[str, str]:
    stanza = holder.wrap(dek, CONTEXT)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in stanza.items())
    assert dek.hex() not in repr(stanza) and base64.b64encode(dek).decode() not in repr(stanza)
    assert holder.unwrap(stanza, CONTEXT) == dek
    return stanza


def test_holder_classes_follow_the_protocol() -> None:
    """The registry builds each holder as Class(uri, key_env), before any client library is imported."""
    holders: list[Holder] = [
        TransitHolder("transit:k", "ACME_KEY"),
        Pkcs11Holder("pkcs11:object=k?module-path=/m.so&pin-value=1234", "ACME_KEY"),
        AwsKmsHolder("awskms:alias/k", "ACME_KEY"),
    ]
    assert [h.uri for h in holders] == ["transit:k", "pkcs11:object=k?module-path=/m.so", "awskms:alias/k"]


def test_missing_client_library_names_the_package(monkeypatch: pytest.MonkeyPatch, dek: bytes) -> None:
    """The runtime needs no hvac/python-pkcs11/boto3: a holder used without its library says what to install."""
    cases: list[tuple[str, Holder, str]] = [
        ("hvac", TransitHolder("transit:k", environ={"BAO_ADDR": "http://127.0.0.1:1", "BAO_TOKEN": "t"}), "hvac"),
        ("pkcs11", Pkcs11Holder("pkcs11:object=k?module-path=/m.so&pin-value=1"), "python-pkcs11"),
        ("boto3", AwsKmsHolder("awskms:alias/k"), "boto3"),
    ]
    for module, holder, package in cases:
        monkeypatch.setitem(sys.modules, module, None)  # what `import module` sees when it is not installed
        with pytest.raises(HolderUnavailableError) as info:
            holder.wrap(dek, CONTEXT)
        message = one_line_error(info, holder.uri, dek)
        assert message.endswith(f"needs the {package} package: pip install {package}"), message


# --- transit (OpenBao) ----------------------------------------------------------------------------


@pytest.fixture
def transit_key(openbao: OpenBao) -> str:
    return openbao.new_transit_key("models-" + secrets.token_hex(4))


def test_transit_uri_forms() -> None:
    assert parse_transit("transit:models") == ("models", "transit")
    assert parse_transit("transit:models-2.a_b?mount=team/transit") == ("models-2.a_b", "team/transit")
    for bad in ("transit:", "transit:a/b", "transit:k?mount=", "transit:k?mount=a&mount=b", "transit:k?x=1", "vault:k"):
        with pytest.raises(ValueError, match=r"transit") as info:
            parse_transit(bad)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("family", ["BAO", "VAULT"])
def test_transit_round_trip(openbao: OpenBao, transit_key: str, dek: bytes, family: str) -> None:
    env = {f"{family}_ADDR": openbao.address, f"{family}_TOKEN": openbao.token}
    holder = TransitHolder(f"transit:{transit_key}", environ=env)
    stanza = round_trip(holder, dek)
    assert list(stanza) == ["ciphertext"] and stanza["ciphertext"].startswith("vault:v1:")


def test_transit_other_mount(openbao: OpenBao, dek: bytes) -> None:
    mount = "team-" + secrets.token_hex(3)
    openbao.bao("secrets", "enable", f"-path={mount}", "transit")
    openbao.bao("write", "-f", f"{mount}/keys/models")
    round_trip(TransitHolder(f"transit:models?mount={mount}", environ=openbao.env), dek)
    with pytest.raises(KeyMissingError) as info:  # the same name at the default mount does not exist
        TransitHolder("transit:models", environ=openbao.env).unwrap({"ciphertext": "vault:v1:AAAA"}, CONTEXT)
    assert "no transit key 'models' at mount 'transit'" in one_line_error(info, "transit:models", dek, openbao.token)


def test_transit_wrong_kek(openbao: OpenBao, transit_key: str, dek: bytes) -> None:
    stanza = TransitHolder(f"transit:{transit_key}", environ=openbao.env).wrap(dek, CONTEXT)
    other = TransitHolder(f"transit:{openbao.new_transit_key('other-' + secrets.token_hex(4))}", environ=openbao.env)
    with pytest.raises(WrongKeyError) as info:
        other.unwrap(stanza, CONTEXT)
    assert "was not wrapped by transit key" in one_line_error(info, other.uri, dek, openbao.token)


def test_transit_unknown_key_is_not_created(openbao: OpenBao, dek: bytes) -> None:
    """transit's encrypt creates a missing key on the fly: a misspelt key name must fail, not make a new KEK."""
    holder = TransitHolder("transit:no-such-key", environ=openbao.env)
    with pytest.raises(KeyMissingError) as info:
        holder.wrap(dek, CONTEXT)
    assert "has no transit key 'no-such-key'" in one_line_error(info, holder.uri, dek, openbao.token)
    with pytest.raises(RuntimeError):
        openbao.bao("read", "transit/keys/no-such-key")
    with pytest.raises(KeyMissingError) as info:
        holder.unwrap({"ciphertext": "vault:v1:" + base64.b64encode(bytes(60)).decode()}, CONTEXT)
    assert "has no transit key 'no-such-key'" in one_line_error(info, holder.uri, dek, openbao.token)


def test_transit_permission_denied(openbao: OpenBao, transit_key: str, dek: bytes) -> None:
    stanza = TransitHolder(f"transit:{transit_key}", environ=openbao.env).wrap(dek, CONTEXT)
    token = openbao.bao("token", "create", "-policy=default", "-field=token").strip()
    holder = TransitHolder(f"transit:{transit_key}", environ={"VAULT_ADDR": openbao.address, "VAULT_TOKEN": token})
    with pytest.raises(KeyMissingError) as info:
        holder.unwrap(stanza, CONTEXT)
    message = one_line_error(info, holder.uri, dek, token)
    assert f"permission denied by {openbao.address}" in message and f"transit/decrypt/{transit_key}" in message


def test_transit_release_policy_allows_only_decrypt(openbao: OpenBao, transit_key: str, dek: bytes) -> None:
    """The README's least-privilege policy: the release pipeline may decrypt (unwrap) and nothing else."""
    policy = f'path "transit/decrypt/{transit_key}" {{ capabilities = ["update"] }}\n'
    policy_file = openbao.home / f"{transit_key}.hcl"
    policy_file.write_text(policy)
    openbao.bao("policy", "write", f"release-{transit_key}", str(policy_file))
    token = openbao.bao("token", "create", f"-policy=release-{transit_key}", "-ttl=10m", "-field=token").strip()
    stanza = TransitHolder(f"transit:{transit_key}", environ=openbao.env).wrap(dek, CONTEXT)
    release = TransitHolder(f"transit:{transit_key}", environ={"BAO_ADDR": openbao.address, "BAO_TOKEN": token})
    assert release.unwrap(stanza, CONTEXT) == dek
    calls: list[tuple[Callable[[], object], str]] = [
        (lambda: release.wrap(dek, CONTEXT), "encrypt"),
        (lambda: release.rewrap(stanza, CONTEXT), "rewrap"),
    ]
    for call, path in calls:
        with pytest.raises(KeyMissingError) as info:
            call()
        assert f"allowing transit/{path}/{transit_key}" in one_line_error(info, release.uri, dek, token)


def test_transit_without_address_or_token(dek: bytes) -> None:
    holder = TransitHolder("transit:models", environ={"BAO_ADDR": "http://127.0.0.1:8200"})
    with pytest.raises(KeyMissingError) as info:
        holder.unwrap({"ciphertext": "vault:v1:AAAA"}, CONTEXT)
    assert "set VAULT_ADDR and VAULT_TOKEN (or BAO_ADDR and BAO_TOKEN)" in one_line_error(info, holder.uri, dek)


def test_transit_stopped_server(tmp_path: Path, dek: bytes) -> None:
    with running_openbao(tmp_path / "bao") as server:
        server.new_transit_key("models")
        holder = TransitHolder("transit:models", environ=server.env)
        stanza = holder.wrap(dek, CONTEXT)
    for call in (lambda: holder.unwrap(stanza, CONTEXT), lambda: holder.wrap(dek, CONTEXT)):
        with pytest.raises(KeyMissingError) as info:
            call()
        message = one_line_error(info, holder.uri, dek, server.token)
        assert f"cannot reach the transit server at {server.address}" in message, message


def test_transit_over_tls(tmp_path: Path, dek: bytes) -> None:
    """An https server: BAO_CACERT names its CA (as for the bao CLI); without it, one line saying to set it."""
    with running_openbao(tmp_path / "bao", tls=True) as server:
        server.new_transit_key("models")
        assert server.address.startswith("https://") and "BAO_CACERT" in server.env
        round_trip(TransitHolder("transit:models", environ=server.env), dek)
        vault_env = {"VAULT_ADDR": server.address, "VAULT_TOKEN": server.token, "VAULT_CACERT": str(server.cacert)}
        round_trip(TransitHolder("transit:models", environ=vault_env), dek)
        holder = TransitHolder("transit:models", environ={"BAO_ADDR": server.address, "BAO_TOKEN": server.token})
        with pytest.raises(KeyMissingError) as info:
            holder.wrap(dek, CONTEXT)
        assert "set VAULT_CACERT (or BAO_CACERT)" in one_line_error(info, holder.uri, dek, server.token)


def test_transit_rotate_rewrap_and_retired_version(openbao: OpenBao, transit_key: str, dek: bytes) -> None:
    """After `rotate`, rewrap moves the stanza to the new version; once min_decryption_version passes the old
    version, an old stanza fails with one line that says to rewrap, and the rewrapped one still unwraps."""
    holder = TransitHolder(f"transit:{transit_key}", environ=openbao.env)
    old = holder.wrap(dek, CONTEXT)
    openbao.bao("write", "-f", f"transit/keys/{transit_key}/rotate")
    new = holder.rewrap(old, CONTEXT)
    assert old["ciphertext"].startswith("vault:v1:") and new["ciphertext"].startswith("vault:v2:")
    assert holder.unwrap(new, CONTEXT) == dek == holder.unwrap(old, CONTEXT)
    openbao.bao("write", f"transit/keys/{transit_key}/config", "min_decryption_version=2")
    assert holder.unwrap(new, CONTEXT) == dek
    with pytest.raises(WrongKeyError) as info:
        holder.unwrap(old, CONTEXT)
    message = one_line_error(info, holder.uri, dek, openbao.token)
    assert "older than its min_decryption_version" in message and "datakey rewrap" in message


def test_transit_derived_key_binds_the_context(openbao: OpenBao, dek: bytes) -> None:
    """With a key made `derived=true`, the product and key id are part of the wrapping, as in AWS KMS."""
    name = openbao.new_transit_key("derived-" + secrets.token_hex(4), "derived=true")
    holder = TransitHolder(f"transit:{name}", environ=openbao.env)
    stanza = round_trip(holder, dek)
    with pytest.raises(WrongKeyError) as info:
        holder.unwrap(stanza, {**CONTEXT, "product": "someone-else"})
    one_line_error(info, holder.uri, dek, openbao.token)


def test_transit_damaged_stanza(openbao: OpenBao, transit_key: str, dek: bytes) -> None:
    holder = TransitHolder(f"transit:{transit_key}", environ=openbao.env)
    with pytest.raises(IntegrityError) as info:
        holder.unwrap({"wrapped": "x"}, CONTEXT)
    assert "has no 'ciphertext' string" in one_line_error(info, holder.uri, dek, openbao.token)


# --- pkcs11 (SoftHSM2) ----------------------------------------------------------------------------


def test_pkcs11_uri_parsing() -> None:
    """RFC 7512: percent-decoding, the stored form without the PIN, and strict refusals."""
    given = "pkcs11:token=My%20token;object=kek%3b1;id=%01%ff;type=secret-key"
    parsed = parse_pkcs11(given + "?module-path=/usr/lib/m.so&pin-value=12%2634")
    assert parsed.path == {"token": "My token", "object": "kek;1", "type": "secret-key", "id": "01ff"}
    assert parsed.id == b"\x01\xff" and parsed.query["pin-value"] == "12&34"
    assert parsed.stored == given + "?module-path=/usr/lib/m.so"
    assert parse_pkcs11("pkcs11:object=k?pin-source=file:/p").stored == "pkcs11:object=k"
    refused = {
        "pkcs11:object=k;object=j": "appears twice",
        "pkcs11:object=k;colour=red": "unknown path attribute 'colour'",
        "pkcs11:object=k?pin-valeu=1": "unknown query attribute 'pin-valeu'",
        "pkcs11:object=a/b": "must be percent-encoded",
        "pkcs11:object=a b": "must be percent-encoded",
        "pkcs11:object=k;type=private": "type=secret-key",
        "pkcs11:token=t": "object=LABEL",
        "pkcs11:object=%ff": "not UTF-8",
        "pkcs11:object": "has no '=VALUE'",
        "pkcs11:object=k?pin-value=1&pin-source=file:/p": "not both",
    }
    for uri, why in refused.items():
        with pytest.raises(ValueError, match=why):
            parse_pkcs11(uri)


def test_pkcs11_refused_uri_masks_the_pin() -> None:
    for uri in ("pkcs11:object=k;bogus=1?pin-value=s3cret-pin", "pkcs11:object=k?PIN-VALUE=s3cret-pin&x=1"):
        with pytest.raises(ValueError) as info:
            Pkcs11Holder(uri)
        assert "s3cret" not in str(info.value) and "-value=…" in str(info.value).lower(), info.value


def test_pkcs11_round_trip_and_the_stored_uri(softhsm: SoftHsm, dek: bytes) -> None:
    """pin-source or pin-value wrap; the stored URI has neither; a device unwraps with <key-env>_PKCS11_PIN."""
    holder = Pkcs11Holder(softhsm.uri("kek-a"))
    stanza = round_trip(holder, dek)
    assert list(stanza) == ["wrapped"] and len(base64.b64decode(stanza["wrapped"])) == 40  # RFC 5649: 32 + 8
    assert holder.uri == softhsm.uri("kek-a", pin=False) and "pin" not in holder.uri and softhsm.pin not in repr(holder)
    with_value = Pkcs11Holder(softhsm.uri("kek-a", pin=False) + f"&pin-value={softhsm.pin}")
    assert with_value.uri == holder.uri and softhsm.pin not in repr(with_value)
    assert with_value.unwrap(with_value.wrap(dek, CONTEXT), CONTEXT) == dek
    device = Pkcs11Holder(holder.uri, key_env="ACME_KEY", environ={"ACME_KEY_PKCS11_PIN": softhsm.pin})
    assert device.unwrap(stanza, CONTEXT) == dek
    assert Pkcs11Holder(holder.uri, environ={}).rewrap(stanza, CONTEXT) == stanza  # no versions: needs no PIN


def test_pkcs11_wrong_kek(softhsm: SoftHsm, dek: bytes) -> None:
    stanza = Pkcs11Holder(softhsm.uri("kek-a")).wrap(dek, CONTEXT)
    other = Pkcs11Holder(softhsm.uri("kek-b"))
    with pytest.raises(WrongKeyError) as info:
        other.unwrap(stanza, CONTEXT)
    message = one_line_error(info, other.uri, dek, softhsm.pin, softhsm.kek_a_value)
    assert "this key-wrapping key did not wrap the data key" in message


@pytest.mark.parametrize("how", ["pin-value", "env"])
def test_pkcs11_wrong_pin(softhsm: SoftHsm, dek: bytes, how: str) -> None:
    stanza = Pkcs11Holder(softhsm.uri("kek-a")).wrap(dek, CONTEXT)
    wrong = "wrong-" + secrets.token_hex(4)
    if how == "pin-value":
        holder = Pkcs11Holder(softhsm.uri(pin=False) + f"&pin-value={wrong}")
    else:
        holder = Pkcs11Holder(softhsm.uri(pin=False), environ={"OVCRYPT_KEY_PKCS11_PIN": wrong})
    with pytest.raises(KeyMissingError) as info:
        holder.unwrap(stanza, CONTEXT)
    message = one_line_error(info, holder.uri, dek, wrong, softhsm.pin, softhsm.kek_a_value)
    assert "the token refused the PIN; set OVCRYPT_KEY_PKCS11_PIN" in message


def test_pkcs11_no_pin(softhsm: SoftHsm, dek: bytes) -> None:
    holder = Pkcs11Holder(softhsm.uri(pin=False), environ={})
    with pytest.raises(KeyMissingError) as info:
        holder.wrap(dek, CONTEXT)
    assert "no PIN; set OVCRYPT_KEY_PKCS11_PIN, or give pin-source=file:PATH" in one_line_error(info, holder.uri, dek)


def test_pkcs11_refuses_an_extractable_kek(softhsm: SoftHsm, dek: bytes) -> None:
    holder = Pkcs11Holder(softhsm.uri("kek-loose"))
    with pytest.raises(KeyMissingError) as info:
        holder.wrap(dek, CONTEXT)
    assert "the key-wrapping key is extractable" in one_line_error(info, holder.uri, dek, softhsm.pin)


def test_pkcs11_token_and_key_not_found(softhsm: SoftHsm, dek: bytes, tmp_path: Path) -> None:
    pin = f"&pin-source=file:{softhsm.pin_file}"
    cases = {
        f"pkcs11:token={softhsm.label};object=no-such-kek?module-path={softhsm.module}{pin}": "no secret key",
        f"pkcs11:token=other;object=kek-a?module-path={softhsm.module}{pin}": "no token of",
        f"pkcs11:object=kek-a;serial=0000?module-path={softhsm.module}{pin}": "no token of",
        f"pkcs11:object=kek-a;library-manufacturer=Acme?module-path={softhsm.module}{pin}": "not the library",
        f"pkcs11:object=kek-a?module-path={tmp_path}/missing.so{pin}": "cannot load the PKCS#11 module",
        f"pkcs11:object=kek-a?module-name=softhsm2{pin}": "module-name is not supported; use ?module-path=",
        f"pkcs11:object=kek-a?module-path={softhsm.module}&pin-source=file:{tmp_path}/nopin": "cannot read the PIN",
    }
    for uri, why in cases.items():
        holder = Pkcs11Holder(uri)
        with pytest.raises(KeyMissingError) as info:
            holder.wrap(dek, CONTEXT)
        assert why in one_line_error(info, holder.uri, dek, softhsm.pin, softhsm.kek_a_value), uri


def test_pkcs11_damaged_stanza(softhsm: SoftHsm, dek: bytes) -> None:
    holder = Pkcs11Holder(softhsm.uri("kek-a"))
    stanza = holder.wrap(dek, CONTEXT)
    raw = bytearray(base64.b64decode(stanza["wrapped"]))
    raw[5] ^= 1
    with pytest.raises(WrongKeyError) as info:
        holder.unwrap({"wrapped": base64.b64encode(raw).decode()}, CONTEXT)
    one_line_error(info, holder.uri, dek, softhsm.pin, softhsm.kek_a_value)
    with pytest.raises(IntegrityError, match="is not base64"):
        holder.unwrap({"wrapped": "not base64!"}, CONTEXT)


# --- awskms (moto: a mock; only the request shapes are tested) -----------------------------------


@pytest.fixture
def aws_env(moto_kms: MotoKms, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoKms]:
    """boto3's credential chain reads the process environment: point it at moto for one test."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL_KMS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in moto_kms.env.items():
        monkeypatch.setenv(name, value)
    yield moto_kms


def test_awskms_uri_forms() -> None:
    arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert parse_awskms(f"awskms:{arn}") == (arn, "eu-west-1")
    assert parse_awskms("awskms:arn:aws:kms:us-east-2:111122223333:alias/models")[1] == "us-east-2"
    assert parse_awskms("awskms:alias/models") == ("alias/models", None)
    assert parse_awskms("awskms:1234abcd-12ab-34cd-56ef-1234567890ab")[1] is None
    for bad in ("awskms:", "awskms:arn:aws:s3:::bucket", "awskms:alias/a b", "kms:alias/x"):
        with pytest.raises(ValueError, match="awskms:arn:aws:kms:REGION"):
            parse_awskms(bad)


def test_awskms_round_trip(aws_env: MotoKms, dek: bytes) -> None:
    """Encrypt/Decrypt with the EncryptionContext, by key ARN and by alias, and ReEncrypt for rewrap.

    moto is a mock of KMS: it checks our requests' shapes (key ids, contexts, ciphertext blobs), not
    KMS's security: a disabled key still decrypts in moto, and no key policy is enforced.
    """
    by_arn = AwsKmsHolder(f"awskms:{aws_env.key_a}")
    stanza = round_trip(by_arn, dek)
    assert list(stanza) == ["ciphertext"]
    by_alias = AwsKmsHolder(f"awskms:{aws_env.alias_a}")
    assert by_alias.unwrap(stanza, CONTEXT) == dek
    assert by_arn.unwrap(by_arn.rewrap(stanza, CONTEXT), CONTEXT) == dek
    explicit = AwsKmsHolder(f"awskms:{aws_env.key_a}", environ=aws_env.env)  # no process environment needed
    assert explicit.unwrap(stanza, CONTEXT) == dek


def test_awskms_context_and_wrong_kek(aws_env: MotoKms, dek: bytes) -> None:
    holder = AwsKmsHolder(f"awskms:{aws_env.key_a}")
    stanza = holder.wrap(dek, CONTEXT)
    with pytest.raises(WrongKeyError) as info:
        holder.unwrap(stanza, {**CONTEXT, "product": "someone-else"})
    assert "encryption context" in one_line_error(info, holder.uri, dek, aws_env.secret)
    other = AwsKmsHolder(f"awskms:{aws_env.key_b}")
    with pytest.raises(WrongKeyError) as info:
        other.unwrap(stanza, CONTEXT)
    assert "wrapped by another key" in one_line_error(info, other.uri, dek, aws_env.secret)


def test_awskms_unknown_key(aws_env: MotoKms, dek: bytes) -> None:
    holder = AwsKmsHolder("awskms:alias/no-such-key")
    with pytest.raises(KeyMissingError) as info:
        holder.wrap(dek, CONTEXT)
    assert "KMS has no such key" in one_line_error(info, holder.uri, dek, aws_env.secret)


def test_awskms_stopped_server(aws_env: MotoKms, dek: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    stanza = AwsKmsHolder(f"awskms:{aws_env.key_a}").wrap(dek, CONTEXT)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    holder = AwsKmsHolder(f"awskms:{aws_env.key_a}")
    for call in (lambda: holder.unwrap(stanza, CONTEXT), lambda: holder.wrap(dek, CONTEXT)):
        with pytest.raises(KeyMissingError) as info:
            call()
        assert "cannot reach KMS (EndpointConnectionError" in one_line_error(info, holder.uri, dek, aws_env.secret)


def test_awskms_no_region(aws_env: MotoKms, dek: bytes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    holder = AwsKmsHolder("awskms:alias/models")
    with pytest.raises(KeyMissingError) as info:
        holder.wrap(dek, CONTEXT)
    assert "no AWS region; use a key ARN or set AWS_REGION" in one_line_error(info, holder.uri, dek, aws_env.secret)
