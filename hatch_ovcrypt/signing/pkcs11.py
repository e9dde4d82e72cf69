"""`signing-key = "pkcs11:token=T;object=O?module-path=M&pin-source=file:P"`: an ECDSA P-256 private key in a
PKCS#11 token (RFC 7512 URI), through python-pkcs11. The key never leaves the token; its signatures are randomised.

The PIN comes from the URI's `pin-source=file:PATH` (or `pin-value=`, discouraged: URIs get logged) or from the
environment variable OVCRYPT_SIGNING_PIN. The module from `module-path=` or PKCS11_MODULE.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ovcrypt_runtime._format.spec import forget_keys

from . import SigningError

PIN_ENV = "OVCRYPT_SIGNING_PIN"
MODULE_ENV = "PKCS11_MODULE"


def parse_uri(uri: str) -> tuple[dict[str, str], dict[str, str]]:
    """RFC 7512: the path attributes (`;`-separated) and the query attributes (`&`-separated), percent-decoded."""
    body = uri[len("pkcs11:") :]
    path, _, query = body.partition("?")
    attrs = dict(part.split("=", 1) for part in path.split(";") if "=" in part)
    params = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
    return {k: unquote(v) for k, v in attrs.items()}, {k: unquote(v) for k, v in params.items()}


class Pkcs11Signer:
    """Signs the SHA-256 digest with CKM_ECDSA in the token; its raw r||s is re-encoded as DER (what DSSE carries)."""

    deterministic = False

    def __init__(self, uri: str, environ: Mapping[str, str]) -> None:
        self.uri = uri
        self._attrs, self._params = parse_uri(uri)
        self._environ = dict(environ)
        if "token" not in self._attrs or "object" not in self._attrs:
            raise SigningError(f"signing-key {uri}: a pkcs11 URI needs token= and object= (RFC 7512)")
        self._public: bytes = self._with_session(self._read_public)

    def _module(self) -> str:
        module = self._params.get("module-path") or self._environ.get(MODULE_ENV)
        if not module:
            raise SigningError(f"signing-key {self.uri}: names no module-path= and {MODULE_ENV} is not set")
        return module

    @forget_keys
    def _pin(self) -> str:
        if "pin-source" in self._params:
            source = self._params["pin-source"]
            path = Path(source[len("file:") :] if source.startswith("file:") else source)
            try:
                return path.read_text().strip()
            except OSError as exc:
                raise SigningError(f"signing-key {self.uri}: the pin-source cannot be read ({exc.strerror})") from None
        pin = self._params.get("pin-value") or self._environ.get(PIN_ENV)
        if not pin:
            raise SigningError(f"signing-key {self.uri}: no PIN: add pin-source=file:PATH to the URI, or set {PIN_ENV}")
        return pin

    @forget_keys
    def _with_session(self, action: Any) -> Any:
        try:
            import pkcs11
        except ImportError:
            raise SigningError(
                f"signing-key {self.uri}: needs python-pkcs11: pip install 'hatch-ovcrypt[pkcs11]'"
            ) from None
        try:
            token = pkcs11.lib(self._module()).get_token(token_label=self._attrs["token"])
            with token.open(user_pin=self._pin()) as session:
                return action(session)
        except SigningError:
            raise
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
            raise SigningError(f"signing-key {self.uri}: {type(exc).__name__} {exc}".strip()) from None

    def _read_public(self, session: Any) -> bytes:
        from cryptography.hazmat.primitives import serialization
        from pkcs11 import KeyType, ObjectClass
        from pkcs11.util.ec import encode_ec_public_key

        key = session.get_key(object_class=ObjectClass.PUBLIC_KEY, key_type=KeyType.EC, label=self._attrs["object"])
        public = serialization.load_der_public_key(encode_ec_public_key(key))
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return bytes(pem)

    def public_pem(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        from pkcs11 import KeyType, Mechanism, ObjectClass
        from pkcs11.util.ec import encode_ecdsa_signature

        def sign(session: Any) -> bytes:
            key = session.get_key(
                object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC, label=self._attrs["object"]
            )
            # CKM_ECDSA over the SHA-256 digest: every token has it (SoftHSM2 has no CKM_ECDSA_SHA256).
            digest = hashlib.sha256(message).digest()
            return bytes(encode_ecdsa_signature(key.sign(digest, mechanism=Mechanism.ECDSA)))

        return bytes(self._with_session(sign))
