"""What the holders share: importing their optional client library, and reading and writing stanza fields."""

from __future__ import annotations

import base64
import binascii
import importlib
from collections.abc import Mapping
from types import ModuleType

from ..._errors import IntegrityError
from ..._format.spec import KEY_SIZE


def require(module: str, package: str, uri: str, who: str | None = None) -> ModuleType:
    """`module`, imported now; HolderUnavailableError (a KeyMissingError) naming the package to install, its
    message starting with `who` (by default "holder <uri>")."""
    from . import HolderUnavailableError  # the package's __init__ imports no holder module: no cycle

    try:
        return importlib.import_module(module)
    except ImportError:
        raise HolderUnavailableError(
            f"{who or f'holder {uri}'}: this needs the {package} package: pip install {package}"
        ) from None


def stanza_field(stanza: Mapping[str, str], name: str, uri: str) -> str:
    """The string field `name` of a stanza body; IntegrityError if it is missing or not a string."""
    value = stanza.get(name)
    if not isinstance(value, str) or not value:
        raise IntegrityError(
            f"holder {uri}: the wrapped key's stanza has no {name!r} string; the data key file is damaged"
        )
    return value


def b64decode_field(stanza: Mapping[str, str], name: str, uri: str) -> bytes:
    """The bytes of a base64 stanza field; IntegrityError if it is not base64."""
    try:
        return base64.b64decode(stanza_field(stanza, name, uri), validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError(
            f"holder {uri}: the stanza's {name!r} is not base64; the data key file is damaged"
        ) from None


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, as the stanzas store bytes."""
    return base64.b64encode(data).decode("ascii")


def check_dek(dek: bytes, uri: str) -> bytes:
    """`dek` if it is a 32-byte key; the holder returned something else otherwise (never shows the bytes)."""
    if len(dek) != KEY_SIZE:
        raise IntegrityError(f"holder {uri}: the holder returned {len(dek)} bytes, not a {KEY_SIZE}-byte data key")
    return bytes(dek)
