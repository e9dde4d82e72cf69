"""Decrypting one encrypted file into memory, and building an OpenVINO model from the plaintext.

Weights are decrypted straight into one writable numpy uint8 buffer that OpenVINO shares
(`ov.Tensor(buf, shared_memory=True)`): one copy of the weights, nothing on disk. OpenVINO's
Model does not keep that tensor alive by itself, so the buffer is pinned on the Model and on
every CompiledModel made from it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ._errors import IntegrityError
from ._format import Header, Role, SegmentCipher, decrypt_into, read_header

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

    import numpy as np
    import openvino as ov

# Given a key id, return the master key or raise KeyMissingError / WrongKeyError.
KeyLookup = Callable[[bytes, str], bytes]
WEIGHTS_ATTR = "_ovcrypt_weights"


def open_encrypted(
    f: IO[bytes],
    label: str,
    key_for: KeyLookup,
    *,
    name: str | None = None,
    role: Role | None = None,
    salt: bytes | None = None,
) -> SegmentCipher:
    """Read a header, check it is the expected model, role and file, find its key and authenticate it."""
    header, raw, tag = read_header(f, label)
    check_identity(header, label, name, role)
    if salt is not None and header.salt != salt:
        # Same key, name and role but another build's file: each segment's key derives from the salt,
        # so matching the salt the signed manifest recorded binds the whole file.
        raise IntegrityError(f"{label}: is not the file this package was built with (it comes from another build)")
    return SegmentCipher.open(key_for(header.key_id, label), header, raw, tag, label)


def check_identity(header: Header, label: str, name: str | None, role: Role | None) -> None:
    """A file moved to another model or role is refused before any decryption (the AEAD would too)."""
    if (name is not None and header.name != name) or (role is not None and header.role != role):
        raise IntegrityError(
            f"{label}: holds the {header.role.label} of model {header.name!r}, "
            f"not the {role.label if role else header.role.label} of model {name or header.name!r}"
        )


def decrypt_to_array(
    source: Traversable | Path,
    label: str,
    key_for: KeyLookup,
    *,
    name: str | None,
    role: Role | None,
    salt: bytes | None = None,
) -> np.ndarray:
    """Decrypt a whole file into a new writable uint8 array; no plaintext ever touches the disk."""
    import numpy as np

    with ExitStack() as stack:
        f = stack.enter_context(source.open("rb"))
        cipher = open_encrypted(f, label, key_for, name=name, role=role, salt=salt)
        buf = np.empty(cipher.header.plaintext_length, dtype=np.uint8)
        decrypt_into(f, cipher, buf.data)
    return buf


def model_from_memory(core: ov.Core, xml: np.ndarray, weights: np.ndarray) -> ov.Model:
    import openvino as ov

    model = core.read_model(xml.tobytes(), ov.Tensor(weights, shared_memory=True))
    xml.fill(0)
    pin_weights(model, weights)
    return model


def pin_weights(obj: object, weights: np.ndarray) -> None:
    """Keep the weights buffer alive exactly as long as the OpenVINO object that reads from it."""
    setattr(obj, WEIGHTS_ATTR, weights)
