"""Key holders: who can unwrap a package's data key (DEK), named by URI (docs/FORMAT.md §6, issue 22).

    age1…            an age X25519 recipient; the device's identity from <key-env>_AGE_IDENTITY(_FILE)  (age.py)
    transit:KEY      Vault / OpenBao transit, through hvac                                              (transit.py)
    pkcs11:…         an RFC 7512 URI naming an AES key-wrapping key in an HSM, through python-pkcs11    (pkcs11.py)
    awskms:ARN       AWS KMS, through boto3, with an encryption context naming the product              (awskms.py)

A holder's module, and its client library, is imported only when a URI of its scheme is used, so the
runtime's dependencies stay openvino, cryptography and numpy; a missing library is one line saying which
package to install. Every unwrapped DEK is checked against the key id it must have before anyone uses
it. No message here holds key material or a PIN.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from typing import Protocol

from ..._errors import KeyFormatError, KeyMissingError, OvcryptError, WrongKeyError
from ..._format.manifest import HOLDER_SCHEMES, HolderEntry, holder_scheme
from ..._format.spec import KEY_SIZE, forget_keys, key_id

Context = Mapping[str, str]  # {"product": project name, "key_id": the DEK's key id, hex}


class Holder(Protocol):
    """One key holder. `uri` is canonical and holds no secret (a PKCS#11 PIN is never part of it)."""

    uri: str

    def wrap(self, dek: bytes, context: Context) -> dict[str, str]:
        """The stanza (JSON strings) that lets this holder, and only it, give `dek` back."""
        ...

    def unwrap(self, stanza: Mapping[str, str], context: Context) -> bytes:
        """The DEK, or KeyMissingError (holder unreachable or not configured here: one line naming what to set)
        or WrongKeyError (reachable, but its key does not open this stanza)."""
        ...

    def rewrap(self, stanza: Mapping[str, str], context: Context) -> dict[str, str]:
        """The stanza re-wrapped under the holder's current key (after a KEK rotation); unchanged if none."""
        ...


class HolderUnavailableError(KeyMissingError):
    """The holder's client library is not installed here."""


# scheme -> (module in this package, class in it); the class is called as Class(uri, key_env).
_MODULES = {
    "age": ("age", "AgeHolder"),
    "transit": ("transit", "TransitHolder"),
    "pkcs11": ("pkcs11", "Pkcs11Holder"),
    "awskms": ("awskms", "AwsKmsHolder"),
}
assert set(_MODULES) == set(HOLDER_SCHEMES)
_PIN_VALUE = re.compile(r"((?:^|[:;?&])\s*pin-value\s*=)[^;?&]*", re.IGNORECASE)
# top-level import name of a client library -> the package that provides it
_PACKAGES = {"hvac": "hvac", "pkcs11": "python-pkcs11", "boto3": "boto3", "botocore": "boto3"}


def display_uri(uri: str) -> str:
    """A URI as messages show it: a PKCS#11 `pin-value` (the user's, never a stored one) is hidden, wherever
    it is (path `;` or query `&`) and however it is written (any case, percent-encoded)."""
    return _PIN_VALUE.sub(r"\1…", uri)


def holder_for(uri: str, key_env: str) -> Holder:
    """The holder a URI names. `key_env` is the product's key variable: the age identity is read from
    `<key_env>_AGE_IDENTITY`, a PKCS#11 PIN may be `<key_env>_PKCS11_PIN`.

    Raises KeyFormatError (not a holder URI, an unknown scheme, a malformed URI) or HolderUnavailableError
    (the client library is not installed), each one line.
    """
    scheme = holder_scheme(uri)
    if uri[:4] == "AGE1":
        raise KeyFormatError("an age recipient is written in lower case (age1…), as age-keygen prints it")
    if scheme not in _MODULES:
        raise KeyFormatError(
            f"{display_uri(uri)!r} is not a key holder: "
            "use age1… (an age recipient), transit:KEY, pkcs11:… or awskms:ARN"
        )
    module_name, class_name = _MODULES[scheme]
    try:
        module = importlib.import_module(f".{module_name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{module_name}":  # a reader without this holder (a partial vendored copy)
            raise HolderUnavailableError(f"holder {display_uri(uri)}: this runtime has no {scheme} holder") from None
        top = (exc.name or "").partition(".")[0]
        if top not in _PACKAGES:
            raise
        package = _PACKAGES[top]
        raise HolderUnavailableError(
            f"holder {display_uri(uri)}: install {package} to use this holder (pip install {package})"
        ) from None
    holder: Holder = getattr(module, class_name)(uri, key_env)
    return holder


@forget_keys
def check_dek(dek: bytes, wanted: str, uri: str) -> bytes:
    """`dek` if it is a 32-byte key of key id `wanted` (hex); else WrongKeyError naming the holder."""
    if len(dek) != KEY_SIZE or key_id(dek).hex() != wanted:
        raise WrongKeyError(
            f"holder {display_uri(uri)} gave a key of another key id than {wanted}: "
            "its stanza belongs to another data key"
        )
    return dek


@forget_keys
def unwrap_first(entries: Iterable[HolderEntry], context: Context, key_env: str, label: str) -> bytes:
    """The DEK, through the first holder (in order) that can unwrap it here, checked against context["key_id"].

    Raises KeyMissingError when none could, or WrongKeyError when one was reached but none gave the key:
    one line listing each holder tried and why.
    """
    reasons: list[str] = []
    wrong = False
    for entry in entries:
        try:
            holder = holder_for(entry.uri, key_env)
            return check_dek(holder.unwrap(entry.stanza, context), context["key_id"], entry.uri)
        except WrongKeyError as exc:
            wrong = True
            reasons.append(_reason(exc, entry.uri))
        except OvcryptError as exc:
            reasons.append(_reason(exc, entry.uri))
    if not reasons:
        raise KeyMissingError(f"{label}: no key holder is listed")
    error = WrongKeyError if wrong else KeyMissingError
    raise error(f"{label}: no key holder could unwrap the data key ({'; '.join(reasons)})")


def _reason(exc: BaseException, uri: str) -> str:
    text = str(exc)
    prefix = f"holder {display_uri(uri)}: "
    return f"{display_uri(uri)}: {text[len(prefix) :] if text.startswith(prefix) else text}"
