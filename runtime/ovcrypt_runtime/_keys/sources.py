"""Master keys: parsing, and finding the one a file needs by its key id.

Lookup order for a key id: keys given to set_key, then the environment variable named in the
manifest (one key or a comma-separated list), then the file named by `<variable>_FILE`, then the
key provider, then the manifest's key holders in order (`_holders`: an age identity, a KMS, an HSM),
whose unwrapped data key is kept for later lookups. Several keys may be offered at once so that
models under an old and a new key both load during a rotation. No message, repr or log line here
ever contains key material, and no traceback of an error raised here holds a key in its frames'
locals (`forget_keys`).
"""

from __future__ import annotations

import os
import secrets
import threading
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import KeyFormatError, KeyMissingError, OvcryptError, WrongKeyError
from .._format.spec import KEY_SIZE, forget_keys, key_id
from .._hardening import dont_dump_bytes

if TYPE_CHECKING:
    from .._format.manifest import HolderEntry

KeyLike = bytes | bytearray | str
KeyProvider = Callable[[str], KeyLike | None]
_HEX = frozenset("0123456789abcdefABCDEF")
PROVIDER_SOURCE = "the key provider"


def generate_key() -> str:
    """A fresh 256-bit key as 64 hex characters."""
    return secrets.token_hex(KEY_SIZE)


@forget_keys
def parse_key(value: KeyLike, source: str) -> bytes:
    """32 raw bytes, or 64 hex characters (as str or ASCII bytes). `source` names where it came from."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) == KEY_SIZE:
            return bytes(value)
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            raise KeyFormatError(f"{source}: a key is 32 bytes or 64 hex characters, got {len(value)} bytes") from None
    if not isinstance(value, str):
        raise KeyFormatError(f"{source}: a key must be bytes or a hex string, not {type(value).__name__}")
    keys = parse_key_list(value, source)
    if len(keys) != 1:
        raise KeyFormatError(f"{source} holds {len(keys)} keys; one key is expected here")
    return keys[0]


@forget_keys
def parse_key_list(text: str, source: str) -> list[bytes]:
    """One key or several, separated by commas or whitespace (as in OVCRYPT_KEY="new,old")."""
    return _parse_lines([text.strip()], source, numbered=False)


# How key files come out of editors and shells, on every OS (the accepted ones are decoded, not refused):
#   UTF-8, with or without a BOM (Notepad); UTF-16 with a BOM (Windows PowerShell 5 `>` and Out-File);
#   CRLF, CR or LF line ends, or none; blank lines, spaces and tabs around a key; `#` comment lines;
#   one key per line, or several separated by commas (during a rotation).
# Refused, each with a message that says what is wrong (and never any part of a key): binary keys
#   (`openssl rand 32 > key`), dotenv lines (`OVCRYPT_KEY=...`), quotes, a 0x prefix, a 128-bit key
#   (32 hex characters, such as the OpenSSL recipe's -K), characters that are not hex digits.
MAX_KEY_FILE_BYTES = 64 << 10
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le", "UTF-32"),
    (b"\x00\x00\xfe\xff", "utf-32-be", "UTF-32"),
    (b"\xef\xbb\xbf", "utf-8", "UTF-8"),
    (b"\xff\xfe", "utf-16-le", "UTF-16"),
    (b"\xfe\xff", "utf-16-be", "UTF-16"),
)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"
_FIX_BINARY = (
    "a key file holds the key as 64 hex characters; convert a 32-byte binary key with "
    "`python3 -c \"import sys; print(open(sys.argv[1], 'rb').read().hex())\" FILE > FILE.hex`"
)


@forget_keys
def read_key_file(path: Path, source: str) -> list[bytes]:
    """The keys in a key file, or a KeyMissingError/KeyFormatError that says exactly what is wrong with it."""
    where = f"{source}: key file {path}"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyMissingError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise KeyFormatError(f"{where} is a directory, not a file") from None
    except OSError as exc:
        raise KeyFormatError(f"{where} cannot be read: {exc.strerror or type(exc).__name__}") from None
    text = decode_key_file(data, where)
    return _parse_lines(text.splitlines(), where, numbered=True)


def decode_key_file(data: bytes, where: str) -> str:
    """The text of a key file: UTF-8 (a BOM is dropped), or UTF-16/32 with a BOM; anything else is refused."""
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFormatError(f"{where} is larger than {MAX_KEY_FILE_BYTES} bytes: it is not a key file")
    encoding, label = "utf-8", ""
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            data, encoding, label = data[len(bom) :], codec, f" ({name} with a byte-order mark)"
            break
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        if len(data) in (KEY_SIZE, KEY_SIZE + 1):
            raise KeyFormatError(f"{where} holds {len(data)} bytes of binary data, not text: {_FIX_BINARY}") from None
        raise KeyFormatError(
            f"{where} is not text{label}: the byte at offset {exc.start} is not {encoding.upper()}; "
            "save it as UTF-8 or ASCII text holding 64 hex characters"
        ) from None
    controls = [i for i, ch in enumerate(text) if ch not in "\t\n\r\f\v" and (ch < " " or ch == "\x7f")]
    if controls:
        if "\x00" in text and not label:
            raise KeyFormatError(
                f"{where} holds NUL bytes: it is binary, or UTF-16 without a byte-order mark; "
                "save it as UTF-8 or ASCII text holding 64 hex characters"
            )
        if len(data) in (KEY_SIZE, KEY_SIZE + 1) and not label:
            raise KeyFormatError(f"{where} holds {len(data)} bytes of binary data, not text: {_FIX_BINARY}")
        raise KeyFormatError(f"{where} holds a control character (U+{ord(text[controls[0]]):04X}): it is not text")
    return text


def _parse_lines(lines: list[str], source: str, *, numbered: bool) -> list[bytes]:
    keys: list[bytes] = []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or (numbered and line.startswith("#")):
            continue
        at = f"{source}, line {number}," if numbered and len(lines) > 1 else source
        _refuse_wrappers(line, at)
        tokens = line.replace(",", " ").split()
        for i, token in enumerate(tokens):
            where = f"{at} (key {i + 1} of {len(tokens)})" if len(tokens) > 1 else at
            keys.append(_parse_hex_key(token, where))
    if not keys:
        raise KeyFormatError(
            f"{source} is empty; it must hold a 64-hex-character key (make one with `hatch-ovcrypt keygen`)"
        )
    return keys


def _refuse_wrappers(line: str, at: str) -> None:
    """The ways a key gets wrapped in something else: say which, and how to write it instead."""
    head, eq, value = line.partition("=")
    words = head.split()
    name = words[-1] if len(words) == 2 and words[0] in ("export", "set") else " ".join(words)
    if eq and value.strip() and not value.startswith("=") and name.replace("$env:", "").isidentifier():
        # (the name is not printed: it is not a key, but a key in another encoding could look like one)
        raise KeyFormatError(
            f"{at} is a variable assignment (NAME=value), as in a .env file or a shell script; "
            "a key file holds only the key: keep just the 64 hex characters"
        )
    if line[0] in _QUOTES or line[-1] in _QUOTES:
        raise KeyFormatError(f"{at} is in quotes; write the 64 hex characters without them")
    if line[:2].lower() == "0x":
        raise KeyFormatError(f"{at} starts with 0x; write the 64 hex characters without it")


def _parse_hex_key(token: str, where: str) -> bytes:
    bad = next((i for i, ch in enumerate(token) if ch not in _HEX), None)
    if bad is None and len(token) == 2 * KEY_SIZE:
        return bytes.fromhex(token)
    message = f"{where} is not a key: expected 64 hex characters (32 bytes), got {len(token)} characters"
    if bad is not None:
        ch = token[bad]
        # Name a character only when it cannot be part of any key's text (non-ASCII): never echo key material.
        what = f" (U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')})" if not ch.isascii() else ""
        message += f" including non-hex ones; the first is character {bad + 1}{what}"
    elif len(token) == KEY_SIZE:
        message += (
            " (a 128-bit key, such as the OpenSSL recipe's -K; hatch-ovcrypt keys are 256-bit: "
            "make one with `hatch-ovcrypt keygen`)"
        )
    raise KeyFormatError(message)


@forget_keys
def keys_from_environment(env_name: str, environ: Mapping[str, str] | None = None) -> Iterator[bytes]:
    """Keys from `$env_name`, then from the file that `$env_name_FILE` names."""
    for _, key in sourced_keys_from_environment(env_name, environ):
        yield key


@forget_keys
def sourced_keys_from_environment(
    env_name: str, environ: Mapping[str, str] | None = None
) -> Iterator[tuple[str, bytes]]:
    """Each key of keys_from_environment with where it came from: `$NAME`, or `$NAME_FILE (path)`."""
    environ = os.environ if environ is None else environ
    if env_name in environ:
        for key in parse_key_list(environ[env_name], f"environment variable {env_name}"):
            yield f"${env_name}", key
    file_var = f"{env_name}_FILE"
    if environ.get(file_var):
        for key in read_key_file(Path(environ[file_var]), f"environment variable {file_var}"):
            yield f"${file_var} ({environ[file_var]})", key


class _Secret:
    """Holds key bytes so that no repr, traceback local dump or inspect listing shows them."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value
        dont_dump_bytes(value)  # a key kept for the process's life: out of core dumps

    def __repr__(self) -> str:
        return "<secret>"

    def reveal(self) -> bytes:
        return self._value


class KeyRing:
    """Keys offered to one runtime, looked up by key id."""

    def __init__(self, env_name: str, provider: KeyProvider | None = None) -> None:
        self.env_name = env_name
        self._provider = provider
        self._keys: dict[bytes, _Secret] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        ids = ", ".join(k.hex() for k in self._keys)
        return f"KeyRing(env={self.env_name!r}, key_ids=[{ids}])"

    @forget_keys
    def add(self, key: KeyLike) -> str:
        """Offer a key (set_key); returns its key id. Calling it again adds keys, it does not replace."""
        raw = parse_key(key, "set_key()")
        kid = key_id(raw)
        with self._lock:
            self._keys[kid] = _Secret(raw)
        return kid.hex()

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()

    def set_provider(self, provider: KeyProvider | None) -> None:
        self._provider = provider

    @forget_keys
    def _candidates(self, wanted: str) -> Iterator[tuple[str, bytes | None]]:
        """Each key offered, with where it came from; a provider that has none for `wanted` gives (source, None)."""
        with self._lock:
            explicit = [secret.reveal() for secret in self._keys.values()]
        for key in explicit:
            yield "set_key()", key
        yield from sourced_keys_from_environment(self.env_name)
        if self._provider is not None:
            found = self._provider(wanted)
            yield PROVIDER_SOURCE, None if found is None else parse_key(found, PROVIDER_SOURCE)

    @forget_keys
    def key_for(
        self, wanted: bytes, label: str, holders: Sequence[HolderEntry] = (), product: str | None = None
    ) -> bytes:
        """The key whose id is `wanted`; otherwise a KeyMissingError or WrongKeyError naming the ids offered and
        where each came from (set_key(), $NAME, $NAME_FILE, the key provider, the data key's holders).

        `holders` (the signed-to-be manifest's, for `product`) are asked last, in order; the data key one
        gives is checked against `wanted`, and kept, so a KMS is asked once per process."""
        offered: dict[str, list[str]] = {}  # key ids by where they came from, in lookup order
        provider_had_none = False
        try:
            for source, key in self._candidates(wanted.hex()):
                if key is None:
                    provider_had_none = True
                    continue
                dont_dump_bytes(key)  # its pages stay out of core dumps after it is freed, too
                kid = key_id(key)
                if kid == wanted:
                    return key
                ids = offered.setdefault(source, [])
                if kid.hex() not in ids:
                    ids.append(kid.hex())
        except (KeyFormatError, KeyMissingError) as exc:  # a bad variable or key file: say which file needed it
            raise type(exc)(f"{label}: {exc}") from None
        holders_failed = ""
        error: type[OvcryptError] = KeyMissingError
        if holders:
            from .holders import unwrap_first

            try:
                key = unwrap_first(holders, {"product": product or "", "key_id": wanted.hex()}, self.env_name, label)
            except (KeyMissingError, WrongKeyError) as exc:
                holders_failed, error = str(exc).removeprefix(f"{label}: "), type(exc)
            else:
                dont_dump_bytes(key)
                with self._lock:
                    self._keys[wanted] = _Secret(key)
                return key
        declined = f"; {PROVIDER_SOURCE} returned None for it" if provider_had_none else ""
        raw_sources = f"{self.env_name} (or {self.env_name}_FILE, a path to a file holding the key), or call set_key()"
        if not offered:
            if holders_failed:  # WrongKeyError when a holder was reached but its key does not fit
                raise error(f"{label}: {holders_failed}; or set the environment variable {raw_sources}{declined}")
            raise KeyMissingError(
                f"{label}: no key found for key id {wanted.hex()}; set the environment variable {raw_sources}{declined}"
            )
        sources = "; ".join(
            f"{source} offers key id{'s' if len(ids) > 1 else ''} {', '.join(ids)}" for source, ids in offered.items()
        )
        also = f"; and {holders_failed}" if holders_failed else ""
        raise WrongKeyError(f"{label}: needs key id {wanted.hex()}, but {sources}{declined}{also}")
