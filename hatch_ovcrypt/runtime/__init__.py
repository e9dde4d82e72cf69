"""Encrypted OpenVINO models of this package, decrypted in memory only (hatch-ovcrypt runtime).

    from <package>._ovcrypt import compile_model
    compiled = compile_model("detector")            # key from $OVCRYPT_KEY (see manifest.json)

Importing this module decrypts nothing and imports neither openvino nor cryptography; the work
happens on first use. It needs only openvino, cryptography and numpy, never hatch-ovcrypt.
"""

from __future__ import annotations

import threading
from importlib import resources
from typing import TYPE_CHECKING, Any

from ._errors import (
    FormatError,
    IntegrityError,
    KeyFormatError,
    KeyMissingError,
    ManifestError,
    ModelNotFoundError,
    OvcryptError,
    UnsafeConfigError,
    WrongKeyError,
)

if TYPE_CHECKING:
    from pathlib import Path

    import openvino as ov

    from ._keys import KeyLike, KeyProvider
    from ._runtime import Runtime

__all__ = [
    "FormatError",
    "IntegrityError",
    "KeyFormatError",
    "KeyMissingError",
    "ManifestError",
    "ModelNotFoundError",
    "OvcryptError",
    "UnsafeConfigError",
    "WrongKeyError",
    "compile_model",
    "load_openssl_model",
    "model_names",
    "read_model",
    "set_key",
    "set_key_provider",
    "unload",
]

# Not named `_runtime`: that is the submodule, and importing it would overwrite a global of that name.
_instance: Runtime | None = None
_instance_lock = threading.Lock()


def _get() -> Runtime:
    global _instance
    with _instance_lock:
        if _instance is None:
            from ._runtime import Runtime

            _instance = Runtime(resources.files(__name__), __name__.rpartition(".")[0] or __name__)
        return _instance


def model_names() -> list[str]:
    """Names of the encrypted models in this package."""
    return _get().model_names()


def read_model(name: str) -> ov.Model:
    """Decrypt a model in memory and return it as an openvino.Model."""
    return _get().read_model(name)


def compile_model(
    name: str, device: str = "CPU", config: dict[str, Any] | None = None, cache_dir: str | Path | None = None
) -> ov.CompiledModel:
    """Decrypt and compile a model; cached per (name, device, config). Thread-safe: one compile per key.

    `cache_dir` (or $OVCRYPT_CACHE_DIR) turns on the encrypted compiled-model cache for warm starts.
    """
    return _get().compile_model(name, device, config, cache_dir)


def set_key(key: KeyLike) -> str:
    """Offer a key (32 bytes, or 64 hex characters). May be called again to offer more; returns the key id."""
    return _get().keyring.add(key)


def set_key_provider(provider: KeyProvider | None) -> None:
    """Register a callable asked for a key id (hex) that returns the key, or None when it has none."""
    _get().keyring.set_provider(provider)


def load_openssl_model(
    xml_path: str | Path, key: bytes | str, iv: bytes | str, *, bin_path: str | Path | None = None
) -> ov.Model:
    """Load a pair encrypted with the OpenSSL recipe (`openssl enc -aes-128-cbc -K .. -iv ..`), in memory.

    `key` and `iv` are 16 bytes, or 32 hex characters each. Padding is checked and the .xml must
    decrypt to IR, so a wrong key is a clear error; CBC cannot detect a modified .bin.
    """
    from ._openssl import load_openssl_model as load
    from ._openssl import parse_hex16

    key = parse_hex16(key, "key") if isinstance(key, str) else key
    iv = parse_hex16(iv, "iv") if isinstance(iv, str) else iv
    return load(xml_path, key, iv, bin_path=bin_path)


def unload(name: str | None = None) -> None:
    """Drop cached compiled models (one model's, or all) so their memory can be freed."""
    _get().unload(name)
