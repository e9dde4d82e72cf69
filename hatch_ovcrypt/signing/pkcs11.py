"""`signing-key = "pkcs11:token=T;object=O?module-path=M&pin-source=file:/P"`: an ECDSA P-256 private key in a
PKCS#11 token (RFC 7512 URI), through python-pkcs11. The key never leaves the token; its signatures are randomised.

The URI is parsed, and the token selected and logged in to, exactly as for the pkcs11 key holder (its
`parse_uri` and `Pkcs11Token`), with `type=private` for the key: the module from `module-path=` or else
PKCS11_MODULE; the PIN from `pin-source=file:/ABSOLUTE/PATH` (or `pin-value=`, discouraged: URIs get logged)
or else the environment variable OVCRYPT_SIGNING_PIN.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from ovcrypt_runtime._errors import KeyFormatError, OvcryptError
from ovcrypt_runtime._keys.holders import display_uri
from ovcrypt_runtime._keys.holders.pkcs11 import Pkcs11Token, parse_uri

from . import SigningError

PIN_ENV = "OVCRYPT_SIGNING_PIN"
MODULE_ENV = "PKCS11_MODULE"


class Pkcs11Signer:
    """Signs the SHA-256 digest with CKM_ECDSA in the token; its raw r||s is re-encoded as DER (what DSSE carries)."""

    deterministic = False

    def __init__(self, uri: str, environ: Mapping[str, str]) -> None:
        try:
            self._parsed = parse_uri(uri, key_type="private")
        except KeyFormatError as exc:
            raise SigningError(f"signing-key {display_uri(uri)!r}: {exc}") from None
        self.uri = self._parsed.stored  # without the PIN: it names the key in messages
        who = f"signing-key {self.uri}"
        self._token = Pkcs11Token(self._parsed, who, PIN_ENV, dict(environ), module_env=MODULE_ENV)
        self._public: bytes = self._with_session(self._read_public)

    def _with_session(self, action: Callable[[Any], Any]) -> Any:
        """action(a logged-in session), every failure as one SigningError line."""
        try:
            import pkcs11
        except ImportError:
            raise SigningError(
                f"signing-key {self.uri}: needs python-pkcs11: pip install 'hatch-ovcrypt[pkcs11]'"
            ) from None
        try:
            with self._token.session() as session:
                return action(session)
        except OvcryptError as exc:
            raise SigningError(str(exc)) from None
        except pkcs11.NoSuchKey:
            raise SigningError(f"signing-key {self.uri}: the token has no EC key pair with this object=/id=") from None
        except pkcs11.MultipleObjectsReturned:
            raise SigningError(f"signing-key {self.uri}: several EC keys match; add id= to the URI") from None
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
            raise SigningError(f"signing-key {self.uri}: {type(exc).__name__} {exc}".strip()) from None

    def _key(self, session: Any, object_class: Any) -> Any:
        from pkcs11 import KeyType

        label, key_id = self._parsed.path.get("object"), self._parsed.id
        return session.get_key(object_class=object_class, key_type=KeyType.EC, label=label, id=key_id)

    def _read_public(self, session: Any) -> bytes:
        from cryptography.hazmat.primitives import serialization
        from pkcs11 import ObjectClass
        from pkcs11.util.ec import encode_ec_public_key

        public = serialization.load_der_public_key(encode_ec_public_key(self._key(session, ObjectClass.PUBLIC_KEY)))
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return bytes(pem)

    def public_pem(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        from pkcs11 import Mechanism, ObjectClass
        from pkcs11.util.ec import encode_ecdsa_signature

        def sign(session: Any) -> bytes:
            key = self._key(session, ObjectClass.PRIVATE_KEY)
            # CKM_ECDSA over the SHA-256 digest: every token has it (SoftHSM2 has no CKM_ECDSA_SHA256).
            digest = hashlib.sha256(message).digest()
            return bytes(encode_ecdsa_signature(key.sign(digest, mechanism=Mechanism.ECDSA)))

        return bytes(self._with_session(sign))
