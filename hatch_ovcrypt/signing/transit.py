"""`signing-key = "transit:KEYNAME[?mount=NAME]"`: an `ecdsa-p256` key of Vault/OpenBao transit, through hvac.

The server, its TLS and namespace settings come from the environment as for the transit key holder
(VAULT_ADDR/VAULT_TOKEN or BAO_*, with the CLI's _CACERT and the rest): both use its `TransitKey`. The key never
leaves the server. Transit signs with a random nonce. The public key is the key's latest version's, as
`transit/keys/NAME` reports it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

from ovcrypt_runtime._errors import KeyFormatError, OvcryptError
from ovcrypt_runtime._keys.holders.transit import TransitKey

from . import SigningError


class TransitSigner:
    """Signs SHA-256 of the message in transit (`marshaling_algorithm=asn1`: DER, as DSSE carries it)."""

    deterministic = False

    def __init__(self, uri: str, environ: Mapping[str, str]) -> None:
        self.uri = uri
        try:
            import hvac  # type: ignore[import-untyped]  # noqa: F401  (only to say which extra brings it)
        except ImportError:
            raise SigningError(f"signing-key {uri}: needs hvac: pip install 'hatch-ovcrypt[transit]'") from None
        try:
            self._key = TransitKey(uri, f"signing-key {uri}", environ)
        except KeyFormatError as exc:
            raise SigningError(f"signing-key {exc}") from None
        key = _signing_error(lambda: self._key.call("read_key")) or {}
        if key.get("type") != "ecdsa-p256":
            raise SigningError(f"signing-key {uri}: is a {key.get('type')} key; signing needs type=ecdsa-p256")
        self._public = str(key["keys"][str(key["latest_version"])]["public_key"]).encode()

    def public_pem(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        answer = _signing_error(lambda: self._key.call(
            "sign_data", hash_input=base64.b64encode(message).decode(), hash_algorithm="sha2-256",
            marshaling_algorithm="asn1",
        ))  # fmt: skip
        signature = str((answer or {}).get("signature", ""))  # "vault:v1:<base64 DER>"
        if not signature.startswith("vault:v"):
            raise SigningError(f"signing-key {self.uri}: the transit server's answer has no vault:vN: signature")
        return base64.b64decode(signature.rsplit(":", 1)[1])


def _signing_error(call: Callable[[], Any]) -> Any:
    """call(), its one-line errors (each starting "signing-key transit:...") as SigningError."""
    try:
        return call()
    except OvcryptError as exc:
        raise SigningError(str(exc)) from None
