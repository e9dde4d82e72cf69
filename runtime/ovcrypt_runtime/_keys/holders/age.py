"""age X25519 recipients (C2SP age v1, https://age-encryption.org/v1), with cryptography only.

A holder `age1…` keeps the data key as a whole armored age file whose payload is the DEK as 64 hex
characters and a newline, so the real tool reads it: `age -d -i identity` prints the key. One age file
per recipient, so adding or removing one touches no other. The device's identity (`AGE-SECRET-KEY-1…`,
as `age-keygen` writes it) comes from `<key-env>_AGE_IDENTITY`, or from the file `<key-env>_AGE_IDENTITY_FILE`
names; no network. Wrapping needs only the recipient (public key).

The spec, in short: the file key (16 random bytes) is wrapped per recipient with X25519 (an ephemeral
share), HKDF-SHA256(shared, salt = share ‖ recipient, "age-encryption.org/v1/X25519") and
ChaCha20-Poly1305 under a zero nonce; the header is MACed with HMAC-SHA256 under HKDF(file key, "header");
the payload is ChaCha20-Poly1305 in 64 KiB chunks under HKDF(file key, nonce, "payload").
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

from ..._errors import KeyFormatError, KeyMissingError, WrongKeyError
from ..._format.spec import forget_keys, hkdf
from ..sources import decode_key_file
from . import _bech32

VERSION_LINE = b"age-encryption.org/v1"
RECIPIENT_HRP = "age"
IDENTITY_HRP = "AGE-SECRET-KEY-"
STANZA_FIELD = "age"  # the holder's stanza: {"age": "<armored age file>"}
_X25519_INFO = b"age-encryption.org/v1/X25519"
_FILE_KEY_SIZE = 16
_CHUNK = 64 << 10
_TAG = 16
_ARMOR_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----"
_ARMOR_END = "-----END AGE ENCRYPTED FILE-----"
_COLUMNS = 64
MAX_AGE_FILE = 16 << 10  # a data key's age file is about 300 bytes; a few recipients, grease stanzas fit easily
_VCHAR = re.compile(rb"[\x21-\x7e]+\Z")


class AgeFormatError(KeyFormatError):
    """Not an age file this reader accepts."""


def parse_recipient(text: str) -> bytes:
    """The 32-byte X25519 public key of an `age1…` recipient; KeyFormatError naming what is wrong."""
    if text.lower() != text:
        raise KeyFormatError("an age recipient is written in lower case (age1…), as age-keygen prints it")
    try:
        key = _bech32.decode(text, RECIPIENT_HRP)
    except _bech32.Bech32Error as exc:
        raise KeyFormatError(f"{text!r} is not an age recipient: it {exc}") from None
    if len(key) != 32:
        raise KeyFormatError(f"{text!r} is not an age X25519 recipient: it holds {len(key)} bytes, not 32")
    return key


def recipient_of(secret: bytes) -> str:
    """The `age1…` recipient of a 32-byte identity scalar."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return _bech32.encode(RECIPIENT_HRP, public)


@forget_keys
def parse_identities(text: str, where: str) -> list[bytes]:
    """The X25519 scalars of an identity text: `AGE-SECRET-KEY-1…` lines; blank and `#` lines are skipped
    (age-keygen's file). KeyFormatError says which line is wrong, and never echoes it."""
    found: list[bytes] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        at = f"{where}, line {number},"
        if line.upper() != line:
            raise KeyFormatError(f"{at} is not an age identity: it is written in upper case "
                                 "(AGE-SECRET-KEY-1…), as age-keygen writes it")  # fmt: skip
        try:
            secret = _bech32.decode(line, IDENTITY_HRP)
        except _bech32.Bech32Error as exc:
            raise KeyFormatError(f"{at} is not an age identity (AGE-SECRET-KEY-1…): it {exc}") from None
        if len(secret) != 32:
            raise KeyFormatError(f"{at} is not an age X25519 identity (it holds {len(secret)} bytes)")
        found.append(secret)
    if not found:
        raise KeyFormatError(f"{where} holds no age identity (AGE-SECRET-KEY-1…); make one with `age-keygen`")
    return found


@forget_keys
def identities_from_environment(key_env: str, environ: Mapping[str, str] | None = None) -> list[bytes]:
    """Identities from `<key_env>_AGE_IDENTITY`, then from the file `<key_env>_AGE_IDENTITY_FILE` names.

    KeyMissingError if neither is set (naming both), KeyFormatError if one is set but wrong."""
    environ = os.environ if environ is None else environ
    var, file_var = f"{key_env}_AGE_IDENTITY", f"{key_env}_AGE_IDENTITY_FILE"
    found: list[bytes] = []
    if environ.get(var):
        found += parse_identities(environ[var], f"environment variable {var}")
    if environ.get(file_var):
        path = Path(environ[file_var])
        where = f"environment variable {file_var}: identity file {path}"
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_AGE_FILE + 1)
        except FileNotFoundError:
            raise KeyMissingError(f"{where} does not exist") from None
        except OSError as exc:
            raise KeyFormatError(f"{where} cannot be read: {exc.strerror or type(exc).__name__}") from None
        found += parse_identities(decode_key_file(data, where), where)
    if not found:
        raise KeyMissingError(f"set {var} to this device's age identity (AGE-SECRET-KEY-1…), or {file_var} to its file")
    return found


# --- the age file format -------------------------------------------------------------------------


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes, what: str) -> bytes:
    """age's base64: standard alphabet, no padding, canonical (re-encoding gives the same text)."""
    if b"=" in text or b"\r" in text:
        raise AgeFormatError(f"{what} is not unpadded base64")
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise AgeFormatError(f"{what} is not base64") from None
    if _b64(data) != text:
        raise AgeFormatError(f"{what} is not canonical base64")
    return data


def _chacha(key: bytes) -> object:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    return ChaCha20Poly1305(key)


def _x25519_share(secret: bytes, peer: bytes) -> tuple[bytes, bytes]:
    """(our public share, the shared secret); ValueError for a low-order peer (all-zero shared secret)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    private = X25519PrivateKey.from_private_bytes(secret)
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer))
    if shared == bytes(32):
        raise ValueError("all-zero shared secret")
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw), shared


def _wrap_key(shared: bytes, share: bytes, recipient: bytes) -> bytes:
    return hkdf(shared, share + recipient, _X25519_INFO)


@forget_keys
def encrypt(payload: bytes, recipients: list[bytes]) -> bytes:
    """An age v1 file (binary) of `payload` for X25519 `recipients` (32-byte public keys)."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    file_key = secrets.token_bytes(_FILE_KEY_SIZE)
    header = VERSION_LINE + b"\n"
    for recipient in recipients:
        share, shared = _x25519_share(secrets.token_bytes(32), recipient)
        body = ChaCha20Poly1305(_wrap_key(shared, share, recipient)).encrypt(bytes(12), file_key, None)
        header += b"-> X25519 " + _b64(share) + b"\n" + _b64(body) + b"\n"  # 43 characters: one line
    header += b"---"
    mac = hmac.digest(hkdf(file_key, b"", b"header"), header, "sha256")
    nonce = secrets.token_bytes(16)
    aead = ChaCha20Poly1305(hkdf(file_key, nonce, b"payload"))
    chunks = [payload[i : i + _CHUNK] for i in range(0, len(payload), _CHUNK)] or [b""]
    out = [header, b" ", _b64(mac), b"\n", nonce]
    for index, chunk in enumerate(chunks):
        last = index == len(chunks) - 1
        out.append(aead.encrypt(index.to_bytes(11, "big") + (b"\x01" if last else b"\x00"), chunk, None))
    return b"".join(out)


def armor(data: bytes) -> str:
    """age's ASCII armor: PEM-like, strict base64 (padded) in 64-column lines."""
    text = base64.b64encode(data).decode()
    lines = [text[i : i + _COLUMNS] for i in range(0, len(text), _COLUMNS)]
    return "\n".join([_ARMOR_BEGIN, *lines, _ARMOR_END]) + "\n"


def dearmor(text: str) -> bytes:
    """The binary age file inside an armored one; AgeFormatError if it is not one (whitespace around is allowed)."""
    lines = text.strip().split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if len(lines) < 3 or lines[0] != _ARMOR_BEGIN or lines[-1] != _ARMOR_END:
        raise AgeFormatError(f"not an armored age file (it must start with {_ARMOR_BEGIN})")
    body = lines[1:-1]
    if any(len(line) != _COLUMNS for line in body[:-1]) or not 0 < len(body[-1]) <= _COLUMNS:
        raise AgeFormatError("the armored age file's lines are not 64 columns")
    try:
        return base64.b64decode("".join(body), validate=True)
    except (binascii.Error, ValueError):
        raise AgeFormatError("the armored age file is not base64") from None


def _parse_header(data: bytes) -> tuple[list[tuple[list[bytes], bytes]], bytes, bytes, bytes]:
    """(stanzas as (arguments, body), the MACed header bytes, the MAC, the payload)."""
    if len(data) > MAX_AGE_FILE:
        raise AgeFormatError(f"the age file is larger than {MAX_AGE_FILE} bytes")
    end = data.find(b"\n---")
    if not data.startswith(VERSION_LINE + b"\n") or end < 0:
        raise AgeFormatError("not an age v1 file (age-encryption.org/v1)")
    mac_line_end = data.find(b"\n", end + 4)
    if mac_line_end < 0 or data[end + 4 : end + 5] != b" ":
        raise AgeFormatError("the age header's MAC line is malformed")
    signed = data[: end + 4]
    mac = _unb64(data[end + 5 : mac_line_end], "the age header's MAC")
    lines = data[len(VERSION_LINE) + 1 : end + 1].split(b"\n")[:-1]
    stanzas: list[tuple[list[bytes], bytes]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith(b"-> "):
            raise AgeFormatError("the age header has a line that is not a stanza")
        args = line[3:].split(b" ")
        if not args or not all(_VCHAR.match(arg) for arg in args):
            raise AgeFormatError("an age stanza has an empty or invalid argument")
        body, i = b"", i + 1
        while True:
            if i >= len(lines):
                raise AgeFormatError("an age stanza's body is not terminated by a short line")
            chunk = lines[i]
            i += 1
            if len(chunk) > _COLUMNS:
                raise AgeFormatError("an age stanza's body line is longer than 64 columns")
            body += chunk
            if len(chunk) < _COLUMNS:
                break
        stanzas.append((args, _unb64(body, "an age stanza's body")))
    if not stanzas or len(mac) != 32:
        raise AgeFormatError("the age header has no recipient stanza or a MAC of the wrong size")
    return stanzas, signed, mac, data[mac_line_end + 1 :]


@forget_keys
def decrypt(data: bytes, identities: list[bytes]) -> bytes | None:
    """The payload of a binary age file, or None if none of `identities` is one of its X25519 recipients.

    AgeFormatError if it is not a valid age file, or if its header MAC or payload fails authentication."""
    from cryptography.exceptions import InvalidTag

    stanzas, signed, mac, payload = _parse_header(data)
    file_key = None
    for args, body in stanzas:
        if args[0] != b"X25519":
            continue  # another recipient type, or grease (rage adds some): not ours
        if len(args) != 2 or len(body) != _FILE_KEY_SIZE + _TAG:
            raise AgeFormatError("an age X25519 stanza is malformed")
        share = _unb64(args[1], "an age X25519 share")
        if len(share) != 32:
            raise AgeFormatError("an age X25519 share is not 32 bytes")
        for secret in identities:
            from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

            try:
                ours, shared = _x25519_share(secret, share)
            except ValueError:
                raise AgeFormatError("an age X25519 share is a low-order point") from None
            try:
                file_key = ChaCha20Poly1305(_wrap_key(shared, share, ours)).decrypt(bytes(12), body, None)
                break
            except InvalidTag:
                continue
        if file_key is not None:
            break
    if file_key is None:
        return None
    if not hmac.compare_digest(hmac.digest(hkdf(file_key, b"", b"header"), signed, "sha256"), mac):
        raise AgeFormatError("the age header failed authentication (edited)")
    return _decrypt_payload(file_key, payload)


@forget_keys
def _decrypt_payload(file_key: bytes, payload: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    if len(payload) < 16 + _TAG:
        raise AgeFormatError("the age payload is truncated")
    aead = ChaCha20Poly1305(hkdf(file_key, payload[:16], b"payload"))
    rest, out, index = payload[16:], [], 0
    step = _CHUNK + _TAG
    while True:
        chunk, rest = rest[:step], rest[step:]
        last = not rest
        try:
            plain = aead.decrypt(index.to_bytes(11, "big") + (b"\x01" if last else b"\x00"), chunk, None)
        except InvalidTag:
            raise AgeFormatError("the age payload failed authentication (edited or truncated)") from None
        if last and not plain and index > 0:
            raise AgeFormatError("the age payload ends with an empty chunk")
        out.append(plain)
        if last:
            return b"".join(out)
        index += 1


# --- the holder ----------------------------------------------------------------------------------


class AgeHolder:
    """`age1…`: the DEK as an armored age file for one X25519 recipient."""

    def __init__(self, uri: str, key_env: str) -> None:
        self.uri = uri
        self.key_env = key_env
        self.recipient = parse_recipient(uri)

    def __repr__(self) -> str:
        return f"AgeHolder({self.uri!r})"

    @forget_keys
    def wrap(self, dek: bytes, context: Mapping[str, str]) -> dict[str, str]:
        return {STANZA_FIELD: armor(encrypt(dek.hex().encode() + b"\n", [self.recipient]))}

    @forget_keys
    def unwrap(self, stanza: Mapping[str, str], context: Mapping[str, str]) -> bytes:
        where = f"holder {self.uri}"
        if set(stanza) != {STANZA_FIELD}:
            raise KeyFormatError(f"{where}: its stanza must hold exactly the field {STANZA_FIELD!r}")
        identities = identities_from_environment(self.key_env)
        try:
            payload = decrypt(dearmor(stanza[STANZA_FIELD]), identities)
        except AgeFormatError as exc:
            raise KeyFormatError(f"{where}: {exc}") from None
        if payload is None:
            offered = ", ".join(recipient_of(secret) for secret in identities)
            raise WrongKeyError(f"{where}: the age identity offered here ({offered}) is not this recipient")
        return parse_dek_payload(payload, where)

    def rewrap(self, stanza: Mapping[str, str], context: Mapping[str, str]) -> dict[str, str]:
        """An age recipient has no key to rotate: the stanza stays as it is."""
        return dict(stanza)


@forget_keys
def parse_dek_payload(payload: bytes, where: str) -> bytes:
    """The DEK from an age payload: 64 hex characters, optionally followed by one newline (`age -r` of `echo`)."""
    text = payload[:-1] if payload.endswith(b"\n") else payload
    if len(text) != 64 or any(ch not in b"0123456789abcdefABCDEF" for ch in text):
        raise KeyFormatError(f"{where}: the age payload is not a data key (64 hex characters)")
    return bytes.fromhex(text.decode("ascii"))
