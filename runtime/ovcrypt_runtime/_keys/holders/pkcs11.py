"""A PKCS#11 AES key-wrapping key (an HSM, a smart card, SoftHSM) as a key holder, through python-pkcs11.

URI: RFC 7512, for example
    pkcs11:token=release;object=models-kek?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin
The path attributes select the token (token, manufacturer, serial, model, slot-id, slot-description,
slot-manufacturer, library-manufacturer, library-description, library-version) and the key
(object = its label, id, type = secret-key). The query names the module (module-path) and the PIN
(pin-value, or pin-source=file:PATH); without either, the PIN comes from <key-env>_PKCS11_PIN.
`uri` keeps the URI as written less pin-value and pin-source: a PIN is never stored in a data key
file or a manifest, each device supplies its own.

wrap: the DEK becomes a session object (never on the token) that the non-extractable KEK wraps with
C_WrapKey(CKM_AES_KEY_WRAP_PAD, RFC 5649); the stanza is {"wrapped": base64}. unwrap: C_UnwrapKey
into a session object that may be read (extractable, not sensitive: it lives only in this session),
read its value, destroy it. SoftHSM 2.6 offers AES_KEY_WRAP_PAD only through C_WrapKey/C_UnwrapKey,
which is also the call HSM policies are written for.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from ..._errors import KeyFormatError, KeyMissingError, WrongKeyError
from ..._format.spec import forget_keys
from . import display_uri
from ._common import b64decode_field, b64encode, check_dek, require

SCHEME = "pkcs11"
_PCT = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-._~"
_P_RES = r":\[\]@!$'()*+,="
_PATH_VALUE = re.compile(rf"(?:[{_UNRESERVED}{_P_RES}&]|{_PCT})*")
_QUERY_VALUE = re.compile(rf"(?:[{_UNRESERVED}{_P_RES}/?|]|{_PCT})*")
_PATH_ATTRIBUTES = frozenset(
    {
        "token", "manufacturer", "serial", "model", "library-manufacturer", "library-description",
        "library-version", "object", "type", "id", "slot-description", "slot-manufacturer", "slot-id",
    }
)  # fmt: skip
_QUERY_ATTRIBUTES = frozenset({"pin-source", "pin-value", "module-name", "module-path"})
_PIN_ATTRIBUTES = ("pin-source", "pin-value")


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed RFC 7512 URI: percent-decoded path attributes (id stays bytes) and query attributes."""

    stored: str  # the URI as written, less pin-value and pin-source
    path: Mapping[str, str]
    query: Mapping[str, str] = field(repr=False)  # may hold pin-value
    id: bytes | None = None


# The key a URI may name, by its `type`: a holder's key-wrapping key, or a publisher's signing key.
KEY_TYPES = {"secret-key": ("key-wrapping key", "an AES key"), "private": ("signing key", "an EC private key")}


def parse_uri(uri: str, key_type: str = "secret-key") -> Pkcs11Uri:
    """The attributes of a `pkcs11:` URI; KeyFormatError (one line, never the PIN) for what RFC 7512 or we refuse.

    Strict: unknown or repeated attributes, characters that must be percent-encoded, text attributes that
    are not UTF-8, a `type` other than `key_type` (a KEY_TYPES key), no object= nor id=, and pin-value
    together with pin-source are refused.
    """
    if not uri.startswith(SCHEME + ":"):
        raise KeyFormatError("not a pkcs11: URI (RFC 7512: pkcs11:token=...;object=...?module-path=...)")
    body = uri[len(SCHEME) + 1 :]
    path_text, has_query, query_text = body.partition("?")
    path: dict[str, str] = {}
    key_id: bytes | None = None
    for part in path_text.split(";") if path_text else []:
        name, value = _attribute(part, _PATH_ATTRIBUTES, _PATH_VALUE, path, "path")
        if name == "id":
            key_id = value
        else:
            path[name] = _text(name, value)
    query: dict[str, str] = {}
    kept: list[str] = []
    for part in query_text.split("&") if has_query else []:
        name, value = _attribute(part, _QUERY_ATTRIBUTES, _QUERY_VALUE, query, "query")
        query[name] = _text(name, value)
        if name not in _PIN_ATTRIBUTES:
            kept.append(part)
    if key_id is not None:
        path["id"] = key_id.hex()
    role, kind = KEY_TYPES[key_type]
    if path.get("type", key_type) != key_type:
        raise KeyFormatError(f"type={path['type']}: the {role} is {kind}, type={key_type}")
    if "object" not in path and key_id is None:
        raise KeyFormatError(f"name the {role} with object=LABEL (or id=)")
    if "pin-value" in query and "pin-source" in query:
        raise KeyFormatError("give pin-value or pin-source, not both")
    stored = f"{SCHEME}:{path_text}" + (f"?{'&'.join(kept)}" if kept else "")
    return Pkcs11Uri(stored=stored, path=path, query=query, id=key_id)


def _attribute(part: str, known: frozenset[str], chars: re.Pattern[str], seen: Mapping[str, object],
               where: str) -> tuple[str, bytes]:  # fmt: skip
    name, equals, raw = part.partition("=")
    if not equals:
        raise KeyFormatError(f"{where} attribute {name!r} has no '=VALUE'")
    if name not in known:
        known_names = ", ".join(sorted(known))
        raise KeyFormatError(f"unknown {where} attribute {name!r} (the {where} attributes known: {known_names})")
    if name in seen or (name == "id" and "id" in seen):
        raise KeyFormatError(f"the {where} attribute {name!r} appears twice")
    if not chars.fullmatch(raw):
        raise KeyFormatError(f"the value of {name!r} has characters that must be percent-encoded (RFC 7512)")
    return name, unquote_to_bytes(raw)


def _text(name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFormatError(f"the value of {name!r} is not UTF-8 after percent-decoding") from None


@dataclass
class Pkcs11Token:
    """The one token an RFC 7512 URI selects, and logged-in sessions on it: for a holder's key-wrapping key, or a
    publisher's signing key (hatch_ovcrypt/signing/pkcs11.py). `who` starts every error (one line, never the
    PIN). The module is the URI's module-path, else `module_env` in the environment when given; the PIN is the
    URI's pin-value or pin-source=file:/ABSOLUTE/PATH, else the environment variable `pin_env`."""

    parsed: Pkcs11Uri = field(repr=False)
    who: str
    pin_env: str
    environ: Mapping[str, str] | None = field(default=None, repr=False)  # None: os.environ when used
    module_env: str | None = None

    @contextmanager
    def session(self) -> Iterator[Any]:
        """A logged-in read-only session on the token, closed afterwards; KeyMissingError if it cannot be had."""
        p11 = require("pkcs11", "python-pkcs11", self.parsed.stored, self.who)
        token = self._token(p11)
        pin = self._pin()
        try:
            session = token.open(user_pin=pin)
        except (p11.exceptions.PinIncorrect, p11.exceptions.PinInvalid, p11.exceptions.PinLenRange):
            raise KeyMissingError(f"{self.who}: the token refused the PIN; {self._pin_advice()}") from None
        except p11.exceptions.PinLocked:
            raise KeyMissingError(f"{self.who}: the token's user PIN is locked; unlock it with the SO PIN") from None
        except p11.exceptions.PKCS11Error as exc:
            raise KeyMissingError(f"{self.who}: cannot open a session on the token ({type(exc).__name__})") from None
        del pin
        with session:
            yield session

    def _env(self) -> Mapping[str, str]:
        return os.environ if self.environ is None else self.environ

    def _token(self, p11: Any) -> Any:
        module = self.parsed.query.get("module-path") or (self._env().get(self.module_env) if self.module_env else None)
        if not module:
            which = "module-name is not supported; use" if "module-name" in self.parsed.query else "add"
            also = f" (or set {self.module_env})" if self.module_env else ""
            raise KeyMissingError(f"{self.who}: {which} ?module-path=/path/to/pkcs11-module.so{also}")
        try:
            lib = p11.lib(module)
        except p11.exceptions.PKCS11Error as exc:
            why = " ".join(str(exc).split()) or type(exc).__name__
            raise KeyMissingError(f"{self.who}: cannot load the PKCS#11 module {module}: {why}") from None
        want = self.parsed.path
        version = ".".join(str(n) for n in lib.library_version)
        if not (
            _matches(want, "library-manufacturer", lib.manufacturer_id)
            and _matches(want, "library-description", lib.library_description)
            and (not want.get("library-version") or version.startswith(want["library-version"]))
        ):
            raise KeyMissingError(f"{self.who}: the module {module} is not the library the URI names")
        tokens = []
        for slot in lib.get_slots(token_present=True):
            if not (
                _matches(want, "slot-description", slot.slot_description)
                and _matches(want, "slot-manufacturer", slot.manufacturer_id)
                and _matches(want, "slot-id", str(slot.slot_id))
            ):
                continue
            token = slot.get_token()
            if not token.flags & p11.TokenFlag.TOKEN_INITIALIZED:
                continue  # an empty slot (SoftHSM always offers one); it holds no key
            serial = token.serial.decode("ascii", "replace") if isinstance(token.serial, bytes) else str(token.serial)
            if (
                _matches(want, "token", token.label)
                and _matches(want, "manufacturer", token.manufacturer_id)
                and _matches(want, "model", token.model)
                and _matches(want, "serial", serial)
            ):
                tokens.append(token)
        if not tokens:
            raise KeyMissingError(f"{self.who}: no token of {module} matches the URI (is the token plugged in?)")
        if len(tokens) > 1:
            raise KeyMissingError(f"{self.who}: {len(tokens)} tokens match; add token= or serial= to the URI")
        return tokens[0]

    @forget_keys
    def _pin(self) -> str:
        query = self.parsed.query
        if "pin-value" in query:
            return query["pin-value"]
        if "pin-source" in query:
            source = query["pin-source"]
            path = source.removeprefix("file://") if source.startswith("file://") else source.removeprefix("file:")
            if not path.startswith("/"):
                raise KeyMissingError(f"{self.who}: pin-source must be file:/ABSOLUTE/PATH")
            try:
                return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise KeyMissingError(f"{self.who}: cannot read the PIN file {path}: {exc.strerror}") from None
        pin = self._env().get(self.pin_env)
        if not pin:
            raise KeyMissingError(f"{self.who}: no PIN; {self._pin_advice()}")
        return pin

    def _pin_advice(self) -> str:
        return f"set {self.pin_env}, or give pin-source=file:PATH in the URI"


@dataclass
class Pkcs11Holder:
    """An AES key-wrapping key in a PKCS#11 token (see module). `key_env` names <key-env>_PKCS11_PIN."""

    given: str = field(repr=False)  # the URI as given, possibly with pin-value
    key_env: str = "OVCRYPT_KEY"
    environ: Mapping[str, str] | None = field(default=None, repr=False)
    uri: str = field(init=False)
    _parsed: Pkcs11Uri = field(init=False, repr=False)
    _token: Pkcs11Token = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self._parsed = parse_uri(self.given)
        except ValueError as exc:
            raise KeyFormatError(f"{display_uri(self.given)!r}: {exc}") from None
        self.uri = self._parsed.stored
        self.given = self.uri  # drop the PIN from the one field that held it as text
        self._token = Pkcs11Token(self._parsed, f"holder {self.uri}", f"{self.key_env}_PKCS11_PIN", self.environ)

    @forget_keys
    def wrap(self, dek: bytes, context: Mapping[str, str]) -> dict[str, str]:
        """{"wrapped": base64 of C_WrapKey(AES_KEY_WRAP_PAD)} for the 32-byte `dek`."""
        check_dek(dek, self.uri)
        p11 = require("pkcs11", "python-pkcs11", self.uri)
        with self._kek() as kek:
            if kek[p11.Attribute.EXTRACTABLE]:
                raise KeyMissingError(
                    f"holder {self.uri}: the key-wrapping key is extractable; make one with CKA_EXTRACTABLE=false "
                    "so that it cannot leave the token"
                )
            session_dek = kek.session.create_object(
                {
                    p11.Attribute.CLASS: p11.ObjectClass.SECRET_KEY,
                    p11.Attribute.KEY_TYPE: p11.KeyType.GENERIC_SECRET,
                    p11.Attribute.VALUE: dek,
                    p11.Attribute.TOKEN: False,
                    p11.Attribute.EXTRACTABLE: True,
                    p11.Attribute.SENSITIVE: True,
                }
            )
            try:
                wrapped = self._device("wrap", kek.wrap_key, session_dek, mechanism=p11.Mechanism.AES_KEY_WRAP_PAD)
            finally:
                session_dek.destroy()
        return {"wrapped": b64encode(wrapped)}

    @forget_keys
    def unwrap(self, stanza: Mapping[str, str], context: Mapping[str, str]) -> bytes:
        """The DEK; WrongKeyError if this KEK did not wrap it, KeyMissingError if the token cannot be used."""
        wrapped = b64decode_field(stanza, "wrapped", self.uri)
        p11 = require("pkcs11", "python-pkcs11", self.uri)
        with self._kek() as kek:
            session_dek = self._device(
                "unwrap",
                kek.unwrap_key,
                p11.ObjectClass.SECRET_KEY,
                p11.KeyType.GENERIC_SECRET,
                wrapped,
                mechanism=p11.Mechanism.AES_KEY_WRAP_PAD,
                store=False,
                template={p11.Attribute.TOKEN: False, p11.Attribute.EXTRACTABLE: True, p11.Attribute.SENSITIVE: False},
            )
            try:
                return check_dek(session_dek[p11.Attribute.VALUE], self.uri)
            finally:
                session_dek.destroy()

    def rewrap(self, stanza: Mapping[str, str], context: Mapping[str, str]) -> dict[str, str]:
        """`stanza` unchanged: a PKCS#11 key has no versions. A new KEK is a new holder: `datakey add-holder`
        with its URI while the old one can still unwrap, then `datakey remove-holder` the old one."""
        b64decode_field(stanza, "wrapped", self.uri)
        return dict(stanza)

    @contextmanager
    def _kek(self) -> Iterator[Any]:
        """The key-wrapping key, in a logged-in read-only session that closes afterwards."""
        p11 = require("pkcs11", "python-pkcs11", self.uri)
        with self._token.session() as session:
            label, key_id = self._parsed.path.get("object"), self._parsed.id
            try:
                kek = session.get_key(object_class=p11.ObjectClass.SECRET_KEY, label=label, id=key_id)
            except p11.exceptions.NoSuchKey:
                raise KeyMissingError(f"holder {self.uri}: the token has no secret key with this object=/id=") from None
            except p11.exceptions.MultipleObjectsReturned:
                raise KeyMissingError(f"holder {self.uri}: several secret keys match; add id= to the URI") from None
            yield kek

    def _device(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """call(*args, **kwargs), with the token's refusals as one line each."""
        p11 = require("pkcs11", "python-pkcs11", self.uri)
        errors = p11.exceptions
        try:
            return call(*args, **kwargs)
        except errors.MechanismInvalid:
            raise KeyMissingError(
                f"holder {self.uri}: the token does not offer CKM_AES_KEY_WRAP_PAD (RFC 5649)"
            ) from None
        except (errors.KeyUnextractable, errors.KeyNotWrappable) as exc:
            raise KeyMissingError(
                f"holder {self.uri}: the key-wrapping key may not {what} ({type(exc).__name__}); "
                f"it needs CKA_{what.upper()}=true"
            ) from None
        except (
            errors.WrappedKeyInvalid,
            errors.WrappedKeyLenRange,
            errors.EncryptedDataInvalid,
            errors.EncryptedDataLenRange,
            errors.GeneralError,  # SoftHSM's answer to a failed RFC 5649 integrity check
        ):
            if what != "unwrap":
                raise KeyMissingError(f"holder {self.uri}: the token failed to {what} the data key") from None
            raise WrongKeyError(
                f"holder {self.uri}: this key-wrapping key did not wrap the data key (another KEK, or a damaged stanza)"
            ) from None
        except errors.PKCS11Error as exc:
            failed = type(exc).__name__
            raise KeyMissingError(f"holder {self.uri}: the token failed to {what} the data key ({failed})") from None


def _matches(want: Mapping[str, str], name: str, have: str) -> bool:
    return name not in want or want[name] == have.strip()
