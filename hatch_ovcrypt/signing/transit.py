"""`signing-key = "transit:KEYNAME[?mount=NAME]"`: an `ecdsa-p256` key of Vault/OpenBao transit, through hvac.

The server from VAULT_ADDR/VAULT_TOKEN[/VAULT_CACERT] (or BAO_*); the key never leaves it. Transit signs with a
random nonce. The public key is the key's latest version's, as `transit/keys/NAME` reports it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from . import SigningError


class TransitSigner:
    """Signs SHA-256 of the message in transit (`marshaling_algorithm=asn1`: DER, as DSSE carries it)."""

    deterministic = False

    def __init__(self, uri: str, environ: Mapping[str, str]) -> None:
        self.uri = uri
        name, _, query = uri[len("transit:") :].partition("?")
        self.key = name
        self.mount = parse_qs(query).get("mount", ["transit"])[0]
        address = environ.get("VAULT_ADDR") or environ.get("BAO_ADDR")
        token = environ.get("VAULT_TOKEN") or environ.get("BAO_TOKEN")
        if not name or not address or not token:
            raise SigningError(f"signing-key {uri}: set VAULT_ADDR and VAULT_TOKEN (or BAO_ADDR and BAO_TOKEN)")
        try:
            import hvac  # type: ignore[import-untyped]
        except ImportError:
            raise SigningError(f"signing-key {uri}: needs hvac: pip install 'hatch-ovcrypt[transit]'") from None
        cacert = environ.get("VAULT_CACERT") or environ.get("BAO_CACERT")
        self._client = hvac.Client(url=address, token=token, verify=cacert or True)
        key = self._call(lambda t: t.read_key(name=self.key, mount_point=self.mount))["data"]
        if key.get("type") != "ecdsa-p256":
            raise SigningError(f"signing-key {uri}: is a {key.get('type')} key; signing needs type=ecdsa-p256")
        self._public = str(key["keys"][str(key["latest_version"])]["public_key"]).encode()

    def _call(self, action: Any) -> Any:
        import hvac

        try:
            return action(self._client.secrets.transit)
        except (hvac.exceptions.VaultError, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SigningError(f"signing-key {self.uri}: transit refused: {first}") from None

    def public_pem(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        answer = self._call(lambda t: t.sign_data(
            name=self.key, hash_input=base64.b64encode(message).decode(), hash_algorithm="sha2-256",
            marshaling_algorithm="asn1", mount_point=self.mount,
        ))  # fmt: skip
        signature = str(answer["data"]["signature"])  # "vault:v1:<base64 DER>"
        return base64.b64decode(signature.rsplit(":", 1)[1])
