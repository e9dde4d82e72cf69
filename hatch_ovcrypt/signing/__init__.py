"""Signing a rendered `_ovcrypt` folder with the publisher's private key (issue 23).

The signature (`model.sig`, runtime/_signature.py defines its format) names every file of the folder by
SHA-256, the manifest among them, in the OpenSSF model-signing format. Signers, by `signing-key` URI:

- `file:PATH`: a PEM ECDSA P-256 private key; deterministic ECDSA (RFC 6979), so a rebuild gives the same
  signature and the wheel stays byte-identical;
- `pkcs11:...`: an ECDSA P-256 private key in a PKCS#11 token (RFC 7512 URI, python-pkcs11);
- `transit:KEYNAME[?mount=NAME]`: an `ecdsa-p256` key of Vault/OpenBao transit (hvac).

HSMs and transit sign with a random nonce: their `model.sig` differs on every build (its `sig` field, so the
file's bytes and its RECORD line); every other byte of the wheel stays identical.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from ovcrypt_runtime._errors import SignatureError
from ovcrypt_runtime._format.layout import SIGNATURE_NAME
from ovcrypt_runtime._keys.signature import PYCACHE, bundle, ignored_paths, key_hint, statement

SCHEMES = ("file:", "pkcs11:", "transit:")
FOLDER_NAME = "_ovcrypt"  # the statement's subject: the folder's name, as model-signing names it


class SigningError(SignatureError):
    """A signing key cannot be used: unreadable, the wrong type, its store unreachable. One line, no key bytes."""


class Signer(Protocol):
    """Something that holds an ECDSA P-256 private key and signs with it (SHA-256, DER signatures)."""

    uri: str
    deterministic: bool  # the same message always gives the same signature

    def public_pem(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


def signer_for(uri: str, environ: Mapping[str, str] | None = None) -> Signer:
    """The signer a `signing-key` URI names (`file:` paths absolute or relative to the working directory).

    Raises SigningError (one line) for an unknown scheme, an unreadable key or a missing client library.
    """
    env = os.environ if environ is None else environ
    if uri.startswith("file:"):
        from .file import FileSigner

        return FileSigner(Path(uri[len("file:") :]))
    if uri.startswith("pkcs11:"):
        from .pkcs11 import Pkcs11Signer

        return Pkcs11Signer(uri, env)
    if uri.startswith("transit:"):
        from .transit import TransitSigner

        return TransitSigner(uri, env)
    raise SigningError(f"signing-key {uri!r}: must start with one of {', '.join(SCHEMES)}")


def publisher_pems(signer: Signer, publisher_keys: tuple[Path, ...]) -> tuple[str, ...]:
    """The publisher keys to pin (PEM text): the `publisher-keys` files, or the signing key's own public key.

    Raises SigningError when the signing key is not among them: the product would refuse its own models.
    """
    own = signer.public_pem().decode()
    pems = tuple(path.read_text("ascii") for path in publisher_keys) or (own,)
    if key_hint(own.encode()) not in {key_hint(pem.encode()) for pem in pems}:
        raise SigningError(
            f"signing-key {signer.uri}: its public key is not among `publisher-keys`; add its .pub file there, "
            "or the product would refuse its own models"
        )
    return pems


def folder_files(folder: Path) -> tuple[dict[str, str], list[str]]:
    """Every regular file under `folder` except the signature and byte-code caches (relative POSIX path ->
    SHA-256 hex), and the folders that hold Python modules (where `__pycache__` appears once installed)."""
    files: dict[str, str] = {}
    module_folders: set[str] = set()
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if rel == SIGNATURE_NAME or PYCACHE in rel.split("/") or not path.is_file():
            continue
        if path.is_symlink():
            raise SigningError(f"{path}: is a symbolic link; a signed folder holds regular files only")
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        files[rel] = digest.hexdigest()
        if rel.endswith(".py"):
            parent = path.parent.relative_to(folder).as_posix()
            module_folders.add("" if parent == "." else parent)
    return files, sorted(module_folders)


def sign_folder(folder: Path, signer: Signer) -> bytes:
    """Write `folder/model.sig`: the publisher's signature over every file of `folder`. Returns its bytes."""
    from ovcrypt_runtime._keys.signature import PAYLOAD_TYPE, pae

    files, module_folders = folder_files(folder)
    payload = statement(FOLDER_NAME, files, ignored_paths(module_folders))
    data = bundle(payload, signer.sign(pae(PAYLOAD_TYPE, payload)), signer.public_pem())
    (folder / SIGNATURE_NAME).write_bytes(data)  # like manifest.json: the build renders into a fresh folder
    return data
