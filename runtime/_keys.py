"""Master keys: parsing, and finding the one a file needs by its key id.

Lookup order for a key id: keys given to set_key, then the environment variable named in the
manifest (one key or a comma-separated list), then the file named by `<variable>_FILE`, then the
key provider. Several keys may be offered at once so that models under an old and a new key both
load during a rotation. No message, repr or log line here ever contains key material, and no
traceback of an error raised here holds a key in its frames' locals (`forget_keys`).
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from ._errors import KeyFormatError, KeyMissingError, WrongKeyError
from ._spec import KEY_SIZE, forget_keys, key_id

KeyLike = bytes | bytearray | str
KeyProvider = Callable[[str], KeyLike | None]
_HEX = frozenset("0123456789abcdefABCDEF")


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
    text = value.strip()
    if not text:
        raise KeyFormatError(
            f"{source} is empty; it must hold a 64-hex-character key (make one with `hatch-ovcrypt keygen`)"
        )
    if len(text) != 2 * KEY_SIZE or not _HEX.issuperset(text):
        raise KeyFormatError(
            f"{source} is not a key: expected 64 hex characters (32 bytes), got {len(text)} characters"
            + ("" if _HEX.issuperset(text) else " including non-hex ones")
        )
    return bytes.fromhex(text)


@forget_keys
def parse_key_list(text: str, source: str) -> list[bytes]:
    """One key or several, separated by commas or whitespace (as in OVCRYPT_KEY="new,old")."""
    items = [item for item in text.replace(",", " ").split()]
    if not items:
        return [parse_key(text, source)]  # raises the "is empty" error
    return [
        parse_key(item, f"{source} (key {i + 1} of {len(items)})" if len(items) > 1 else source)
        for i, item in enumerate(items)
    ]


@forget_keys
def read_key_file(path: Path, source: str) -> list[bytes]:
    try:
        text = path.read_text("ascii")
    except FileNotFoundError:
        raise KeyMissingError(f"{source}: key file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFormatError(f"{source}: cannot read key file {path} ({type(exc).__name__})") from None
    return parse_key_list(text, f"{source} ({path})")


@forget_keys
def keys_from_environment(env_name: str, environ: Mapping[str, str] | None = None) -> Iterator[bytes]:
    """Keys from `$env_name`, then from the file that `$env_name_FILE` names."""
    environ = os.environ if environ is None else environ
    if env_name in environ:
        yield from parse_key_list(environ[env_name], f"environment variable {env_name}")
    file_var = f"{env_name}_FILE"
    if environ.get(file_var):
        yield from read_key_file(Path(environ[file_var]), f"environment variable {file_var}")


class _Secret:
    """Holds key bytes so that no repr, traceback local dump or inspect listing shows them."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

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
    def _candidates(self, wanted: str) -> Iterator[bytes]:
        with self._lock:
            explicit = [secret.reveal() for secret in self._keys.values()]
        yield from explicit
        yield from keys_from_environment(self.env_name)
        if self._provider is not None:
            found = self._provider(wanted)
            if found is not None:
                yield parse_key(found, "key provider")

    @forget_keys
    def key_for(self, wanted: bytes, label: str) -> bytes:
        """The key whose id is `wanted`; otherwise a KeyMissingError or WrongKeyError naming the ids."""
        offered: list[str] = []
        try:
            for key in self._candidates(wanted.hex()):
                kid = key_id(key)
                if kid == wanted:
                    return key
                if kid.hex() not in offered:
                    offered.append(kid.hex())
        except (KeyFormatError, KeyMissingError) as exc:  # a bad variable or key file: say which file needed it
            raise type(exc)(f"{label}: {exc}") from None
        if not offered:
            raise KeyMissingError(
                f"{label}: no key found; set the environment variable {self.env_name} "
                f"(or {self.env_name}_FILE, a path to a file holding the key), or call set_key()"
            )
        raise WrongKeyError(
            f"{label}: needs key id {wanted.hex()}, but the keys offered have key ids {', '.join(offered)}"
        )
