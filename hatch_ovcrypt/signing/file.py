"""`signing-key = "file:PATH"`: a PEM ECDSA P-256 private key on the build machine, signing deterministically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ovcrypt_runtime._format.spec import forget_keys

from . import SigningError

# RFC 6979 signing needs OpenSSL 3.2 or later under cryptography.
MIN_OPENSSL = (3, 2)


class FileSigner:
    """Signs with the key in a PEM file (unencrypted PKCS#8 or SEC1). The key is loaded on each call, so this
    object holds only the path."""

    deterministic = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.uri = f"file:{path}"
        self.public_pem()  # refuse a bad key now, with its one-line error

    @forget_keys
    def _key(self) -> Any:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            key = serialization.load_pem_private_key(self.path.read_bytes(), password=None)
        except OSError as exc:
            raise SigningError(f"signing-key {self.uri}: cannot be read ({exc.strerror})") from None
        except (ValueError, TypeError):
            raise SigningError(
                f"signing-key {self.uri}: is not an unencrypted PEM private key; "
                "make one with `hatch-ovcrypt keygen --signing --out FILE`"
            ) from None
        if not (isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)):
            raise SigningError(f"signing-key {self.uri}: is not an ECDSA P-256 key (the key type model-signing takes)")
        return key

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return bytes(self._key().public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ))  # fmt: skip

    @forget_keys
    def sign(self, message: bytes) -> bytes:
        """ECDSA P-256 / SHA-256 with RFC 6979 nonces: the same message and key always give the same DER bytes."""
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            return bytes(self._key().sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True)))
        except UnsupportedAlgorithm:
            from cryptography.hazmat.backends.openssl import backend

            raise SigningError(
                f"signing-key {self.uri}: deterministic ECDSA needs OpenSSL 3.2 or later under cryptography, which has "
                f"{backend.openssl_version_text()}; upgrade cryptography (its wheels bundle a recent OpenSSL)"
            ) from None


def generate_pair(out: Path) -> Path:
    """Write a new ECDSA P-256 private key to `out` (PEM PKCS#8, mode 0600, never overwriting) and its public
    key to `out` + `.pub`. Returns the public key's path. FileExistsError when either exists."""
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pub = out.with_name(out.name + ".pub")
    if pub.exists():
        raise FileExistsError(pub)
    key = ec.generate_private_key(ec.SECP256R1())
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))  # fmt: skip
    os.chmod(out, 0o600)
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    return pub
