"""The encrypted compiled-model cache: warm starts without OpenVINO's plaintext CACHE_DIR.

An entry is `compiled.export_model()` encrypted in this project's format (role COMPILED) under the
package's master key, in `<cache dir>/<hex>.ovc`. The file name is a SHA-256 over everything the
compiled blob depends on (format version, key id, the manifest's digests of the model's encrypted
files, device, sorted config, OpenVINO version, device name), and the same hex is the entry's
name in its authenticated header, so an entry renamed to another key is refused like a corrupt
one. Each entry gets a random salt (so a fresh file key): the blob is not reproducible anyway,
and a (key, nonce) pair can never repeat across entries. Writes go to a temporary file in the
cache folder and are renamed into place, so concurrent processes see a whole entry or none.

A missing, corrupt, truncated, foreign (other key, other entry) or unimportable entry is never
trusted: it is removed and the model compiled again. Plaintext never touches the disk.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._atomic import atomic_writer
from ._errors import OvcryptError
from ._loader import decrypt_file, owning_tensor, pin_weights
from ._spec import SALT_SIZE, VERSION, Role
from ._writer import BufferSource, encrypt

if TYPE_CHECKING:
    import numpy as np
    import openvino as ov

SUFFIX = ".ovc"
_DOMAIN = b"hatch-ovcrypt/v1/compiled-cache"


def entry_name(
    key_id: bytes, digests: Sequence[str], device: str, config: Sequence[tuple[str, str]], ov_version: str,
    device_name: str = "",
) -> str:  # fmt: skip
    """Hex SHA-256 naming one cache entry; also the name bound into the entry's header."""
    h = hashlib.sha256(_DOMAIN)
    for part in (str(VERSION), key_id.hex(), *digests, device, repr(tuple(sorted(config))), ov_version, device_name):
        data = part.encode()
        h.update(len(data).to_bytes(8, "big") + data)  # length-prefixed: no two tuples share an encoding
    return h.hexdigest()


def entry_path(cache_dir: Path, name: str) -> Path:
    return cache_dir / f"{name}{SUFFIX}"


def load(
    path: Path, key: bytes, name: str, core: ov.Core, device: str, config: dict[str, Any]
) -> ov.CompiledModel | None:
    """Import a cached compiled model, or None (after discarding a bad entry) when there is none to trust."""

    try:
        f = path.open("rb", buffering=0)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        _warn(f"cannot read cache entry {path}: {exc}")
        return None
    with f:
        label = f"compiled-model cache entry {path.name}"
        buf: np.ndarray | None = None
        try:
            buf = decrypt_file(f, label, lambda _key_id, _label: key, name=name, role=Role.COMPILED)
            # The CPU plugin keeps reading from the imported tensor (it shares, not copies), so the
            # decrypted blob is the one copy of the weights and lives exactly as long as the model.
            compiled = core.import_model(owning_tensor(buf), device, config)
        except (OvcryptError, OSError, RuntimeError, ValueError) as exc:
            if buf is not None:
                buf.fill(0)
            _discard(path, f.fileno(), exc)
            return None
    pin_weights(compiled, buf)
    return compiled


def store(path: Path, key: bytes, compiled: ov.CompiledModel) -> None:
    """Export, encrypt and atomically write one entry. A failure only costs the next warm start."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        stream = compiled.export_model()
        blob = stream.getbuffer() if hasattr(stream, "getbuffer") else memoryview(stream)
        try:
            with atomic_writer(path) as out:
                encrypt(key, BufferSource(blob), out, name=path.stem, role=Role.COMPILED, salt=os.urandom(SALT_SIZE))
        finally:
            _wipe_export(stream, blob)
    except (OSError, RuntimeError, ValueError) as exc:
        _warn(f"cannot write compiled-model cache entry {path}: {exc}")


def _wipe_export(stream: object, blob: memoryview) -> None:
    """The exported blob holds the weights in plaintext: zero it before it is freed."""
    import numpy as np

    if not blob.readonly:
        np.frombuffer(blob, dtype=np.uint8).fill(0)
    blob.release()
    del stream


def _discard(path: Path, fd: int, exc: BaseException) -> None:
    """Remove a bad entry, unless another process has meanwhile replaced it with a new one."""
    try:
        if os.path.samestat(os.fstat(fd), os.stat(path)):
            path.unlink()
    except OSError:
        pass
    _warn(f"discarded compiled-model cache entry {path.name}: {exc}")


def _warn(message: str) -> None:
    warnings.warn(f"hatch-ovcrypt: {message}", RuntimeWarning, stacklevel=4)
