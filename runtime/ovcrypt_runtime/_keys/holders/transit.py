"""Vault / OpenBao transit as a key holder, through hvac (imported only when this holder is used).

URI: `transit:KEYNAME`, or `transit:KEYNAME?mount=MOUNT` for a transit engine mounted elsewhere than
`transit`. The server's address and token come from VAULT_ADDR / VAULT_TOKEN, or BAO_ADDR / BAO_TOKEN,
with the CLI's _CACERT, _CAPATH, _CLIENT_CERT, _CLIENT_KEY, _SKIP_VERIFY and _NAMESPACE. The stanza is
{"ciphertext": "vault:vN:..."}: the server's transit encryption of the base64 DEK. The context
(product and key id) is sent as transit's `context`: the server ignores it for ordinary keys and
binds the ciphertext to it for keys made with `derived=true`.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from ..._errors import KeyFormatError, KeyMissingError, WrongKeyError
from ..._format.spec import forget_keys
from ._common import b64encode, check_dek, require, stanza_field

SCHEME = "transit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_TIMEOUT_S = 15
_PATHS = {  # the policy path each call needs: transit/<path>/<key>
    "read_key": "keys", "encrypt_data": "encrypt", "decrypt_data": "decrypt", "rewrap_data": "rewrap",
    "sign_data": "sign",
}  # fmt: skip
_SET_ADDRESS = "set VAULT_ADDR and VAULT_TOKEN (or BAO_ADDR and BAO_TOKEN)"


def parse_uri(uri: str) -> tuple[str, str]:
    """(key name, mount) of `transit:KEYNAME[?mount=MOUNT]`; KeyFormatError (one line) for anything else."""
    if not uri.startswith(SCHEME + ":"):
        raise KeyFormatError(f"{uri!r} is not a transit URI (transit:KEYNAME or transit:KEYNAME?mount=MOUNT)")
    name, _, query = uri[len(SCHEME) + 1 :].partition("?")
    if not _NAME.fullmatch(name):
        raise KeyFormatError(f"{uri!r}: a transit key name is letters, digits, '.', '_' and '-' (transit:KEYNAME)")
    mount = "transit"
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise KeyFormatError(f"{uri!r}: the query must be ?mount=MOUNT") from None
        if len(pairs) != 1 or pairs[0][0] != "mount" or not _MOUNT.fullmatch(pairs[0][1]):
            raise KeyFormatError(
                f"{uri!r}: the only query is ?mount=MOUNT (a mount path such as transit or team/transit)"
            )
        mount = pairs[0][1]
    return name, mount


def _context(context: Mapping[str, str]) -> str:
    """Transit's `context` parameter: base64 of the context as compact JSON with sorted keys."""
    return b64encode(json.dumps(dict(context), sort_keys=True, separators=(",", ":")).encode())


@dataclass
class TransitKey:
    """One key of a transit engine on the server VAULT_* (else BAO_*) names: the holder's, or a publisher's
    signing key (hatch_ovcrypt/signing/transit.py). `who` starts every error ("holder transit:k")."""

    uri: str
    who: str
    environ: Mapping[str, str] | None = field(default=None, repr=False)  # None: os.environ when used
    name: str = field(init=False)
    mount: str = field(init=False)

    def __post_init__(self) -> None:
        self.name, self.mount = parse_uri(self.uri)

    def client(self) -> Any:
        """An hvac client for the server VAULT_* (else BAO_*) names, with the CLI's TLS and namespace settings."""
        hvac = require("hvac", "hvac", self.uri, self.who)
        env = os.environ if self.environ is None else self.environ
        prefix = "VAULT" if env.get("VAULT_ADDR") else "BAO"
        other = "BAO" if prefix == "VAULT" else "VAULT"

        def setting(name: str) -> str | None:
            return env.get(f"{prefix}_{name}") or env.get(f"{other}_{name}") or None

        address, token = env.get(f"{prefix}_ADDR"), setting("TOKEN")
        if not address or not token:
            raise KeyMissingError(f"{self.who}: no transit server: {_SET_ADDRESS}")
        verify: bool | str = setting("CACERT") or setting("CAPATH") or True
        if (setting("SKIP_VERIFY") or "").lower() in {"1", "true", "yes"}:
            verify = False
        cert = (setting("CLIENT_CERT"), setting("CLIENT_KEY")) if setting("CLIENT_CERT") else None
        return hvac.Client(
            url=address, token=token, verify=verify, cert=cert, namespace=setting("NAMESPACE"), timeout=_TIMEOUT_S
        )

    def call(self, method: str, *, forbidden_ok: bool = False, **kwargs: str) -> Any:
        """transit.`method`(name=..., mount_point=..., **kwargs)["data"], every failure as one line
        (KeyMissingError: the server cannot be used; WrongKeyError: it refused what was asked)."""
        hvac = require("hvac", "hvac", self.uri, self.who)
        requests = require("requests", "requests", self.uri, self.who)
        client = self.client()
        address = client.adapter.base_uri
        try:
            answer = getattr(client.secrets.transit, method)(name=self.name, mount_point=self.mount, **kwargs)
        except requests.exceptions.SSLError:
            raise KeyMissingError(
                f"{self.who}: TLS to the transit server at {address} failed; set VAULT_CACERT (or BAO_CACERT) "
                "to the CA that signed its certificate"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise KeyMissingError(
                f"{self.who}: cannot reach the transit server at {address} ({type(exc).__name__}); "
                "start it, or set VAULT_ADDR (or BAO_ADDR) to where it listens"
            ) from exc
        except hvac.exceptions.Forbidden:
            if forbidden_ok:
                return None
            raise KeyMissingError(
                f"{self.who}: permission denied by {address}: the token needs a policy allowing "
                f"{self.mount}/{_PATHS[method]}/{self.name} (or the token has expired)"
            ) from None
        except hvac.exceptions.InvalidPath as exc:
            raise KeyMissingError(
                f"{self.who}: {address} has no transit key {self.name!r} at mount {self.mount!r} "
                f"(bao write -f {self.mount}/keys/{self.name}, or ?mount=MOUNT); server said: {_said(exc)}"
            ) from None
        except hvac.exceptions.VaultError as exc:
            raise _request_error(self.who, self.name, self.mount, address, _said(exc)) from None
        return answer.get("data") if isinstance(answer, dict) else None


@dataclass
class TransitHolder:
    """A transit key on a Vault or OpenBao server (see module)."""

    uri: str
    key_env: str = "OVCRYPT_KEY"  # the registry's Class(uri, key_env); unused here
    environ: Mapping[str, str] | None = field(default=None, repr=False)  # None: os.environ when used
    _key: TransitKey = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._key = TransitKey(self.uri, f"holder {self.uri}", self.environ)

    @forget_keys
    def wrap(self, dek: bytes, context: Mapping[str, str]) -> dict[str, str]:
        """{"ciphertext": "vault:vN:..."} for the 32-byte `dek`."""
        check_dek(dek, self.uri)
        # transit's encrypt would create a missing key (upsert): refuse a misspelt name. A token allowed to
        # encrypt but not to read the key's settings: go on, encrypt will tell.
        self._key.call("read_key", forbidden_ok=True)
        data = self._key.call("encrypt_data", plaintext=b64encode(dek), context=_context(context))
        return {"ciphertext": _ciphertext(data, self.uri)}

    @forget_keys
    def unwrap(self, stanza: Mapping[str, str], context: Mapping[str, str]) -> bytes:
        """The DEK; WrongKeyError if this transit key did not wrap it, KeyMissingError if the server cannot be used."""
        data = self._key.call("decrypt_data", ciphertext=self._stanza(stanza), context=_context(context))
        plaintext = data.get("plaintext") if isinstance(data, dict) else None
        if not isinstance(plaintext, str):
            raise WrongKeyError(f"holder {self.uri}: the server's decrypt answer has no plaintext")
        return check_dek(base64.b64decode(plaintext), self.uri)

    @forget_keys  # the token, in hvac's frames
    def rewrap(self, stanza: Mapping[str, str], context: Mapping[str, str]) -> dict[str, str]:
        """The stanza re-encrypted under the key's newest version (transit rewrap; the DEK never leaves the server)."""
        data = self._key.call("rewrap_data", ciphertext=self._stanza(stanza), context=_context(context))
        return {"ciphertext": _ciphertext(data, self.uri)}

    def _stanza(self, stanza: Mapping[str, str]) -> str:
        return stanza_field(stanza, "ciphertext", self.uri)


def _said(exc: BaseException) -> str:
    """The server's error text on one line (hvac's errors carry the server's `errors` list)."""
    said = " ".join(str(exc).split())
    return said if said and said != "None" else type(exc).__name__


def _request_error(who: str, name: str, mount: str, address: str, said: str) -> Exception:
    if "encryption key not found" in said:
        return KeyMissingError(f"{who}: {address} has no transit key {name!r} at mount {mount!r}")
    if "message authentication failed" in said:
        return WrongKeyError(
            f"{who}: the data key was not wrapped by transit key {name!r} (or the stanza is damaged)"
        )
    if "disallowed by policy" in said:
        return WrongKeyError(
            f"{who}: the wrapped data key is under a version of {name!r} older than its min_decryption_version; "
            "rewrap data key files (hatch-ovcrypt datakey rewrap FILE) before retiring a key version"
        )
    if "missing 'context'" in said:
        return WrongKeyError(
            f"{who}: transit key {name!r} is derived; it needs the context the data key was made with"
        )
    return WrongKeyError(f"{who}: the transit server refused: {said}")


def _ciphertext(data: Any, uri: str) -> str:
    text = data.get("ciphertext") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.startswith("vault:v"):
        raise KeyMissingError(f"holder {uri}: the transit server's answer has no vault:vN: ciphertext")
    return text
