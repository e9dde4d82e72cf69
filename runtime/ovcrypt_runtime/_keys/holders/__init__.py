"""Key holders: services and devices that wrap the data key (DEK) under a key-encryption key they keep.

Each holder is named by a URI in its ecosystem's own form and turns a DEK into a stanza (a flat JSON
object of strings) and back. The client library of each holder is imported only when that holder is
used, so the runtime's dependencies stay openvino, cryptography and numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ..._errors import KeyMissingError


class Holder(Protocol):
    """One key holder, named by its URI (stored without secrets such as a PKCS#11 pin-value)."""

    uri: str

    def wrap(self, dek: bytes, context: Mapping[str, str]) -> dict[str, str]:
        """The stanza body that only this holder can turn back into `dek` (32 bytes)."""
        ...

    def unwrap(self, stanza: Mapping[str, str], context: Mapping[str, str]) -> bytes:
        """The DEK in `stanza`; WrongKeyError / KeyMissingError (one line naming the URI and what to do)."""
        ...

    def rewrap(self, stanza: Mapping[str, str], context: Mapping[str, str]) -> dict[str, str]:
        """`stanza` wrapped again under the holder's newest key version (after a KEK rotation)."""
        ...


class HolderUnavailableError(KeyMissingError):
    """The holder's client library is not installed here."""
