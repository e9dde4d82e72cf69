"""The publisher's signature of an `_ovcrypt` folder (`model.sig`), and checking it under pinned public keys.

The signature is the OpenSSF model-signing format (model-signing 1.1.1, key mode), so that
`model_signing verify key <_ovcrypt> --signature <_ovcrypt>/model.sig --public_key PUB.pem` accepts an
installed folder (docs/FORMAT.md §5.3):

- a Sigstore bundle v0.3 (JSON) whose `dsseEnvelope` holds one ECDSA P-256 / SHA-256 signature (DER)
  over the DSSE pre-authentication encoding (PAE) of
- an in-toto statement v1 with predicate `https://model_signing/signature/v1.0`: every file of the folder
  (relative POSIX path, SHA-256), the method `files`, and the paths verifiers ignore (`__pycache__`, the
  signature itself).

The runtime needs one entry of it: `manifest.json`'s SHA-256. The manifest lists every encrypted file's
SHA-256, so a verified signature authenticates the manifest and, through it, every model file. Unlike the
manifest's HMAC (under the model key, which every device holds), only the publisher's private key makes a
signature that verifies, so a device that can decrypt a model cannot make a package that other devices
accept.

This module is the format's one definition: the build's signers (hatch_ovcrypt.signing) use the builders
below. It imports `cryptography` only when a signature is checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .._errors import SignatureError
from .._format.layout import MANIFEST_NAME, SIGNATURE_NAME

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
# model-signing's own defaults (git files, the signature), and the byte-code caches Python writes beside the
# runtime's modules after installation: verifiers skip those paths when they hash the folder.
DEFAULT_IGNORED = (".git", ".github", ".gitignore", ".gitattributes")
PYCACHE = "__pycache__"
# A signature file is a few kB per hundred files; a bound keeps a forged one from costing memory.
MAX_SIGNATURE_BYTES = 16 << 20


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the ECDSA signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def ignored_paths(folders: Sequence[str]) -> list[str]:
    """The statement's `ignore_paths`: model-signing's defaults, `__pycache__` in every folder holding
    Python modules (`folders`, relative POSIX paths, "" for the root), and the signature itself."""
    caches = sorted(f"{folder}/{PYCACHE}" if folder else PYCACHE for folder in set(folders))
    return [*DEFAULT_IGNORED, *caches, SIGNATURE_NAME]


def statement(name: str, files: Mapping[str, str], ignore_paths: Sequence[str]) -> bytes:
    """The in-toto statement (JSON bytes) naming every file of folder `name`: relative path -> SHA-256 hex.

    The subject's digest is model-signing's: SHA-256 over the files' digests, in path order.
    """
    root = hashlib.sha256()
    resources = []
    for path in sorted(files):
        root.update(bytes.fromhex(files[path]))
        resources.append({"name": path, "digest": files[path], "algorithm": "sha256"})
    doc = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": root.hexdigest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "allow_symlinks": False,
                "method": "files",
                "hash_type": "sha256",
                "ignore_paths": list(ignore_paths),
            },
            "resources": resources,
        },
    }
    return json.dumps(doc, indent=2).encode()


def key_hint(public_pem: bytes) -> str:
    """model-signing's `publicKey.hint`: SHA-256 (hex) of the key's PEM SubjectPublicKeyInfo, re-encoded."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(public_pem)
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def bundle(payload: bytes, signature_der: bytes, public_pem: bytes) -> bytes:
    """The signature file: a Sigstore bundle v0.3 with the DSSE envelope of `payload` and its signature."""
    doc = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_hint(public_pem)}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature_der).decode(), "keyid": ""}],
        },
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def load_public_key(pem: str | bytes, label: str) -> Any:
    """A PEM public key as cryptography's EllipticCurvePublicKey; SignatureError unless it is ECDSA P-256."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    except (ValueError, TypeError):
        raise SignatureError(f"{label}: is not a PEM public key") from None
    if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
        raise SignatureError(f"{label}: is not an ECDSA P-256 public key (the key type model-signing verifies)")
    return key


def verify_signature(signature: bytes | None, manifest: bytes, publisher_keys: Sequence[str], label: str) -> None:
    """Check a package's signature file (bytes, None when missing) and its manifest (the bytes as read) under
    the pinned publisher keys (PEM strings). Returns when one key verifies the DSSE signature and the signed
    statement names exactly this manifest's SHA-256; raises SignatureError (one line) otherwise.
    """
    if signature is None:
        raise SignatureError(
            f"{label}: has no {SIGNATURE_NAME}, but this package pins {len(publisher_keys)} publisher key(s): "
            "it was not built by its publisher; reinstall it from the publisher's release"
        )
    payload, signatures = _envelope(signature, label)
    verified = False
    for index, pem in enumerate(publisher_keys):
        key = load_public_key(pem, f"{label}: pinned publisher key {index + 1}")
        if _verifies(key, pae(PAYLOAD_TYPE, payload), signatures):
            verified = True
            break
    if not verified:
        raise SignatureError(
            f"{label}: {SIGNATURE_NAME} does not verify under any of the {len(publisher_keys)} publisher key(s) "
            "this package pins: it was not signed by its publisher; reinstall it from the publisher's release"
        )
    digest = signed_digests(payload, label).get(MANIFEST_NAME)
    if digest != hashlib.sha256(manifest).hexdigest():
        raise SignatureError(
            f"{label}: {MANIFEST_NAME} is not the one the publisher signed (its SHA-256 differs from "
            f"{SIGNATURE_NAME}'s); reinstall the package"
        )


def _envelope(signature: bytes, label: str) -> tuple[bytes, list[bytes]]:
    """The DSSE payload and the signatures (DER) of a bundle; SignatureError when it is not one."""
    try:
        if len(signature) > MAX_SIGNATURE_BYTES:
            raise ValueError("too large")
        doc = json.loads(signature)
        envelope = doc["dsseEnvelope"]
        if doc.get("mediaType") != BUNDLE_MEDIA_TYPE or envelope.get("payloadType") != PAYLOAD_TYPE:
            raise ValueError("not a bundle")
        payload = base64.b64decode(envelope["payload"], validate=True)
        sigs = [base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]]
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, binascii.Error):
        raise SignatureError(
            f"{label}: {SIGNATURE_NAME} is not a Sigstore bundle v0.3 with a DSSE envelope; reinstall the package"
        ) from None
    return payload, sigs


def _verifies(key: Any, message: bytes, signatures: list[bytes]) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    for sig in signatures:
        try:
            key.verify(sig, message, ec.ECDSA(hashes.SHA256()))
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


def signed_digests(payload: bytes, label: str) -> dict[str, str]:
    """Relative path -> SHA-256 hex of every file a (verified) statement lists; SignatureError when malformed."""
    try:
        doc = json.loads(payload)
        if doc["_type"] != STATEMENT_TYPE or doc["predicateType"] != PREDICATE_TYPE:
            raise ValueError("not a model-signing statement")
        found = {}
        for resource in doc["predicate"]["resources"]:
            if resource["algorithm"] == "sha256" and isinstance(resource["name"], str):
                found[resource["name"]] = str(resource["digest"])
        return found
    except (ValueError, TypeError, KeyError, RecursionError):
        raise SignatureError(f"{label}: the statement {SIGNATURE_NAME} signs is not model-signing's") from None
