"""manifest.json: which models a package's _ovcrypt folder holds, and exactly which files make each one.

Written by the build, read by the runtime and the tools (docs/FORMAT.md §5). A model is a set of files
by relative path: a single IR is the smallest case (kind "ir": `<model>.xml` and `<model>.bin`), an
exported folder (an LLM, a VLM, an image-generation pipeline) is the general one.

The manifest is public (readable without the key) and untrusted until its HMAC verifies. So it holds
data only: nothing in it chooses code to import or environment variables to read (those are rendered
into the generated `_settings` module). Every file path is derived from the model name and relative
path, never taken from the manifest, so a manifest cannot point outside `models/`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .._errors import ManifestError
from .layout import MANIFEST_NAME
from .spec import KEY_ID_SIZE, MAX_NAME_BYTES, Role, forget_keys, hkdf

FORMAT = "hatch-ovcrypt-manifest/2"
FORMAT_V1 = "hatch-ovcrypt-manifest/1"  # still read: key_env/key_provider in the body, models as xml/bin pairs
IR_KIND = "ir"
# Folder kinds whose pipelines the runtime builds from memory, and "files": any folder, reached file by file.
FOLDER_KINDS = ("llm", "vlm", "text2image", "files")
KINDS = (IR_KIND, *FOLDER_KINDS)
ENCRYPTED_SUFFIX = ".ovc"
_INFO_MAC = b"hatch-ovcrypt/v1/manifest-mac"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PROVIDER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*\Z")
_PRODUCT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_PATH_PART = re.compile(r"[A-Za-z0-9_.-]+\Z")
_HEX = re.compile(r"[0-9a-f]*\Z")
_ENTRY_KEYS = frozenset({"file", "size", "sha256", "salt"})
_TOP_KEYS = frozenset({"_generated", "format", "generator", "key_id", "models", "mac"})
# Key holders (docs/FORMAT.md §6): who can unwrap the package's data key. The format knows these schemes;
# a reader meeting another refuses the manifest (or wrapped-key file) rather than ignore a holder.
HOLDER_SCHEMES = ("age", "transit", "pkcs11", "awskms")
MAX_HOLDERS = 64
MAX_URI_CHARS = 2048
MAX_STANZA_CHARS = 64 << 10
_STANZA_FIELD = re.compile(r"[a-z0-9_-]{1,64}\Z")


def is_model_name(name: str) -> bool:
    return bool(_IDENTIFIER.match(name)) and name.isascii()


def is_env_name(name: str) -> bool:
    return bool(_IDENTIFIER.match(name))


def is_product_name(name: str) -> bool:
    """A project name as PyPI allows it (letters, digits, `.`, `_`, `-`), at most 128 characters."""
    return bool(_PRODUCT.match(name))


def is_provider_ref(ref: str) -> bool:
    return bool(_PROVIDER.match(ref))


def relpath_problem(relpath: str) -> str | None:
    """Why a file's path inside a folder model is refused, or None: POSIX, relative, no `..`, plain names."""
    parts = relpath.split("/")
    if relpath.startswith("/") or any(part in ("", ".", "..") for part in parts):
        return "must be a relative path without `.`, `..` or empty parts"
    if not all(_PATH_PART.match(part) for part in parts):
        return "may only use letters, digits, `_`, `.` and `-` in its names"
    return None


def role_of(relpath: str) -> Role:
    """What a file of a model holds, from its suffix; bound into its header (docs/FORMAT.md §3.1)."""
    if relpath.endswith(".xml"):
        return Role.XML
    if relpath.endswith(".bin"):
        return Role.BIN
    return Role.DATA


@dataclass(frozen=True)
class FileIdentity:
    """Where one file of a model is stored, and the header name and role its encrypted file must carry."""

    file: str  # path under models/
    name: str  # header name
    role: Role


def file_identity(model: str, kind: str, relpath: str) -> FileIdentity:
    """Kind "ir" keeps version 1's names (`<model>.xml.ovc`, header name `<model>`), so its bytes are unchanged;
    a folder's file is `<model>/<relpath>.ovc` with header name `<model>/<relpath>`."""
    role = role_of(relpath)
    if kind == IR_KIND:
        return FileIdentity(f"{model}.{role.label}{ENCRYPTED_SUFFIX}", model, role)
    name = f"{model}/{relpath}"
    return FileIdentity(name + ENCRYPTED_SUFFIX, name, role)


def ir_files(model: str) -> tuple[str, str]:
    """The relative paths of a single-IR model's two files."""
    return f"{model}.xml", f"{model}.bin"


@dataclass(frozen=True)
class FileEntry:
    file: str
    size: int  # of the encrypted file, bytes: a reader refuses a file of another size before reading it
    sha256: str  # of the encrypted file: public, and the cache key's notion of "this model"
    salt: str  # the file header's salt: binds this entry to exactly one encrypted file (no mix-and-match)


@dataclass(frozen=True)
class Part:
    """One IR of a model: its graph and, when it has one, its weights (relative paths)."""

    xml: str
    bin: str | None


@dataclass(frozen=True)
class ModelEntry:
    kind: str
    files: dict[str, FileEntry]  # relative path -> entry

    def parts(self, model: str) -> dict[str, Part]:
        """Every IR of the model by part name: the relative path without `.xml` (kind "ir": the model name)."""
        if self.kind == IR_KIND:
            xml, weights = ir_files(model)
            return {model: Part(xml, weights)}
        parts = {}
        for path in sorted(self.files):
            if path.endswith(".xml"):
                stem = path[: -len(".xml")]
                parts[stem] = Part(path, f"{stem}.bin" if f"{stem}.bin" in self.files else None)
        return parts


def holder_scheme(uri: str) -> str:
    """The scheme of a holder URI: `age` for an age recipient (`age1…`), else the part before the first `:`."""
    if uri.startswith("age1"):
        return "age"
    scheme, colon, _ = uri.partition(":")
    return scheme if colon else ""


@dataclass(frozen=True)
class HolderEntry:
    """One key holder: its URI (no secrets: a PIN is never stored) and its stanza, the data key wrapped for it."""

    uri: str
    stanza: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"uri": self.uri, "stanza": dict(sorted(self.stanza.items()))}


class UnknownHolderError(Exception):
    """A holder of a scheme this reader does not know: newer than this reader, or edited."""


def parse_holders(value: Any) -> tuple[HolderEntry, ...]:
    """Validate a `holders` list (of the manifest or of a wrapped data key file): Invalid, or
    UnknownHolderError naming the scheme this reader does not know."""
    _require(isinstance(value, list) and 0 < len(value) <= MAX_HOLDERS,
             f"`holders` must be a list of 1 to {MAX_HOLDERS} holders")  # fmt: skip
    entries: list[HolderEntry] = []
    for i, item in enumerate(value):
        label = f"holder {i + 1}"
        _require(isinstance(item, dict) and set(item) == {"uri", "stanza"}, f"{label} must have exactly uri and stanza")
        uri, stanza = item["uri"], item["stanza"]
        _require(isinstance(uri, str) and 0 < len(uri) <= MAX_URI_CHARS and uri.isascii() and uri.isprintable()
                 and " " not in uri, f"{label} uri must be printable ASCII without spaces")  # fmt: skip
        _require("pin-value=" not in uri.lower(), f"{label} uri holds a pin-value: a PIN is never stored")
        scheme = holder_scheme(uri)
        if scheme not in HOLDER_SCHEMES:
            raise UnknownHolderError(
                f"holder {i + 1} has scheme {scheme or uri[:16]!r}, which this reader does not know "
                f"(it knows {', '.join(HOLDER_SCHEMES)}); upgrade hatch-ovcrypt"
            )
        _require(uri not in (e.uri for e in entries), f"{label} repeats uri {uri!r}")
        _require(isinstance(stanza, dict) and bool(stanza), f"{label} stanza must be a non-empty object")
        for name, text in stanza.items():
            _require(bool(_STANZA_FIELD.match(name)), f"{label} stanza field {name[:64]!r} is not a-z, 0-9, _ or -")
            _require(isinstance(text, str) and len(text) <= MAX_STANZA_CHARS,
                     f"{label} stanza field {name!r} must be a string of at most {MAX_STANZA_CHARS} chars")  # fmt: skip
        entries.append(HolderEntry(uri, dict(stanza)))
    return tuple(entries)


@dataclass(frozen=True)
class Manifest:
    generator: str
    key_id: str
    models: dict[str, ModelEntry]
    mac: str = ""
    # A version 1 manifest is verified against the body exactly as it was signed.
    signed_body: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    # Who can unwrap the key (copied from the product's wrapped data key file); under the MAC. Absent when empty,
    # so a package built without `data-key` has the same manifest as before holders existed.
    holders: tuple[HolderEntry, ...] = ()
    product: str | None = None  # the holders' context names the product (present exactly when holders are)

    def body(self) -> dict[str, Any]:
        if self.signed_body is not None:
            return self.signed_body
        body: dict[str, Any] = {
            "format": FORMAT,
            "generator": self.generator,
            "key_id": self.key_id,
            "models": {
                name: {"kind": model.kind, "files": {path: vars(e) for path, e in sorted(model.files.items())}}
                for name, model in sorted(self.models.items())
            },
        }
        if self.holders:
            body["holders"] = [holder.to_json() for holder in self.holders]
            body["product"] = self.product
        return body

    @forget_keys
    def signed(self, key: bytes) -> Manifest:
        return Manifest(self.generator, self.key_id, self.models, compute_mac(key, self.body()),
                        holders=self.holders, product=self.product)  # fmt: skip

    def to_json(self) -> bytes:
        doc = {"_generated": f"generated by {self.generator} - do not edit", **self.body(), "mac": self.mac}
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    @forget_keys
    def verify(self, key: bytes) -> None:
        if not hmac.compare_digest(compute_mac(key, self.body()), self.mac):
            raise ManifestError(
                f"{MANIFEST_NAME} failed authentication: it was edited or does not belong to these files; "
                "reinstall the package"
            )


@forget_keys
def compute_mac(key: bytes, body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return hmac.new(hkdf(key, None, _INFO_MAC), canonical, hashlib.sha256).hexdigest()


def parse_manifest(data: bytes) -> Manifest:
    """Parse and validate the structure; the MAC is checked later, once a key is at hand.

    Raises ManifestError, and only ManifestError, for anything that is not a valid manifest.
    """
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, int digit limit, deep nesting
        raise ManifestError(f"{MANIFEST_NAME} is not valid JSON (truncated or edited); reinstall the package") from None
    try:
        return _parse(doc)
    except UnknownHolderError as exc:
        raise ManifestError(f"{MANIFEST_NAME}: {exc}") from None
    except Invalid as exc:
        raise ManifestError(f"{MANIFEST_NAME} is invalid: {exc}; reinstall the package") from None


class Invalid(Exception):
    pass


def _require(ok: bool, problem: str) -> None:
    if not ok:
        raise Invalid(problem)


def _hex(value: Any, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and bool(_HEX.match(value))


def _parse(doc: Any) -> Manifest:
    _require(isinstance(doc, dict) and doc.get("format") in (FORMAT, FORMAT_V1), f"format is not {FORMAT}")
    v1 = doc["format"] == FORMAT_V1
    extra = sorted(set(doc) - _TOP_KEYS - ({"key_env", "key_provider"} if v1 else {"holders", "product"}))
    _require(not extra, f"unknown field {extra[0]!r}" if extra else "")
    for name in ("generator", "key_id", "mac", *(("key_env",) if v1 else ())):
        _require(isinstance(doc.get(name), str), f"`{name}` must be a string")
    _require(_hex(doc["key_id"], 2 * KEY_ID_SIZE), "`key_id` is not a key id")
    _require(_hex(doc["mac"], 64), "`mac` must be 64 hex characters")
    _require(isinstance(doc.get("models"), dict), "`models` must be an object")
    models = {}
    for name, model in doc["models"].items():
        _require(is_model_name(name), f"model name {name!r} is not an identifier")
        models[name] = _parse_v1_model(name, model) if v1 else _parse_model(name, model)
    signed_body = None
    if v1:
        _require(is_env_name(doc["key_env"]), "`key_env` is not an environment variable name")
        provider = doc.get("key_provider")
        _require(provider is None or (isinstance(provider, str) and is_provider_ref(provider)),
                 "`key_provider` must be null or 'module:function'")  # fmt: skip
        keys = ("format", "generator", "key_env", "key_provider", "key_id", "models")
        signed_body = {key: doc.get(key) for key in keys}
    holders = () if v1 or "holders" not in doc else parse_holders(doc["holders"])
    product = doc.get("product")
    _require(("product" in doc) == bool(holders), "`product` and `holders` come together")
    _require(product is None or (isinstance(product, str) and is_product_name(product)),
             "`product` must be a project name")  # fmt: skip
    return Manifest(doc["generator"], doc["key_id"], models, doc["mac"], signed_body, holders, product)


def _parse_model(name: str, model: Any) -> ModelEntry:
    _require(isinstance(model, dict) and set(model) == {"kind", "files"}, f"model {name!r} must have kind and files")
    kind, files = model["kind"], model["files"]
    _require(kind in KINDS, f"model {name!r} kind must be one of {', '.join(KINDS)}")
    _require(isinstance(files, dict) and bool(files), f"model {name!r} files must be a non-empty object")
    if kind == IR_KIND:
        _require(set(files) == set(ir_files(name)), f"model {name!r} must list exactly {' and '.join(ir_files(name))}")
    entries = {}
    for path, entry in files.items():
        _require(relpath_problem(path) is None, f"model {name!r} file path {path!r} is invalid")
        identity = file_identity(name, kind, path)
        _require(len(identity.name.encode()) <= MAX_NAME_BYTES, f"model {name!r} file path {path!r} is too long")
        entries[path] = _parse_entry(entry, identity.file, f"model {name!r} file {path!r}")
    return ModelEntry(kind, entries)


def _parse_v1_model(name: str, model: Any) -> ModelEntry:
    _require(isinstance(model, dict) and set(model) == {"xml", "bin"}, f"model {name!r} must list its xml and bin")
    entries = {}
    for path in ir_files(name):
        identity = file_identity(name, IR_KIND, path)
        entries[path] = _parse_entry(model[identity.role.label], identity.file, f"model {name!r} {identity.role.label}")
    return ModelEntry(IR_KIND, entries)


def _parse_entry(entry: Any, expected_file: str, label: str) -> FileEntry:
    _require(isinstance(entry, dict) and set(entry) == _ENTRY_KEYS, f"{label} entry must have file, size, sha256, salt")
    _require(entry["file"] == expected_file, f"{label} file must be {expected_file!r}")
    _require(type(entry["size"]) is int and entry["size"] >= 0, f"{label} size must be a non-negative integer")
    _require(_hex(entry["sha256"], 64), f"{label} sha256 must be 64 hex characters")
    _require(_hex(entry["salt"], 64), f"{label} salt must be 64 hex characters")
    return FileEntry(entry["file"], entry["size"], entry["sha256"], entry["salt"])
