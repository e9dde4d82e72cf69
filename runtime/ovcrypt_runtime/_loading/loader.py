"""Decrypting one encrypted file into memory, and building an OpenVINO model from the plaintext.

Weights are decrypted straight into memory that an OpenVINO tensor owns (`owned_buffer`), and that
very tensor is handed to `read_model` / `import_model`: one copy of the weights, nothing on disk.
A numpy array wrapped with `ov.Tensor(buf, shared_memory=True)` would not do: OpenVINO's C++
objects do not keep such an array alive, so `core.compile_model(read_model(name))` would read
freed memory once the temporary Model is gone. The numpy view is also pinned on the Model and on
every CompiledModel made from it, so Python code can reach the buffer (tests check that it is the
one copy).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, NamedTuple

from .._errors import IntegrityError
from .._format.direct import ALIGNMENT as DIRECT_ALIGNMENT
from .._format.direct import MIN_BYTES as DIRECT_MIN_BYTES
from .._format.reader import matches_file_size, read_and_decrypt, read_header
from .._format.spec import Header, Role, SegmentCipher
from .._hardening import dont_dump

if TYPE_CHECKING:
    import numpy as np
    import openvino as ov

# Given a key id, return the master key or raise KeyMissingError / WrongKeyError.
KeyLookup = Callable[[bytes, str], bytes]
WEIGHTS_ATTR = "_ovcrypt_weights"


class Locked(NamedTuple):
    """A file's header, read and checked, and the step that finds its key and authenticates it."""

    header: Header
    unlock: Callable[[], SegmentCipher]


def read_locked(
    f: IO[bytes],
    label: str,
    key_for: KeyLookup,
    *,
    name: str | None = None,
    role: Role | None = None,
    salt: bytes | None = None,
    expected_size: int | None = None,
) -> Locked:
    """Read a header and check it is the expected model, role and file. `.unlock()` then finds its key
    and authenticates it; a load runs that while the ciphertext is already being read.

    `expected_size` is the file's size as the signed manifest records it: a header that implies any
    other size is refused here, before anything is allocated or read for it.
    """
    header, raw, tag = read_header(f, label)
    check_identity(header, label, name, role)
    if salt is not None and header.salt != salt:
        # Same key, name and role but another build's file: each segment's key derives from the salt,
        # so matching the salt the signed manifest recorded binds the whole file.
        raise IntegrityError(f"{label}: is not the file this package was built with (it comes from another build)")
    if expected_size is not None:
        check_expected_size(header, expected_size, label)
    return Locked(header, lambda: SegmentCipher.open(key_for(header.key_id, label), header, raw, tag, label))


def check_expected_size(header: Header, expected_size: int, label: str) -> None:
    """The file size a header implies must be the one the signed manifest records (IntegrityError)."""
    if header.file_size != expected_size:
        raise IntegrityError(
            f"{label}: is not the file this package was built with: its header makes it {header.file_size} "
            f"bytes long, the package lists {expected_size} (it comes from another build, or the manifest was edited)"
        )


def check_identity(header: Header, label: str, name: str | None, role: Role | None) -> None:
    """A file moved to another model or role is refused before any decryption (the AEAD would too)."""
    if (name is not None and header.name != name) or (role is not None and header.role != role):
        raise IntegrityError(
            f"{label}: holds the {header.role.label} of model {header.name!r}, "
            f"not the {role.label if role else header.role.label} of model {name or header.name!r}"
        )


def decrypt_file(
    f: IO[bytes],
    label: str,
    key_for: KeyLookup,
    *,
    name: str | None,
    role: Role | None,
    salt: bytes | None = None,
    expected_size: int | None = None,
    max_size: int | None = None,
    before_decrypt: Callable[[], None] | None = None,
) -> np.ndarray:
    """Decrypt an opened file into a new writable uint8 array; no plaintext ever touches the disk.

    The array is sized from the header's plaintext length, so it is allocated only once that length
    is trusted: the header implies the file's real size and a size the caller trusts, either exactly
    (`expected_size`, the signed manifest's size of the file) or at most (`max_size`). The key is
    then found and the header authenticated while worker threads already read the ciphertext into
    the array (read_and_decrypt). Without such a bound, or for a stream whose size is unknown (a file
    inside a zip), the header is authenticated first: a forged header (a sparse file that claims
    terabytes, say) costs a few hundred bytes of reading and one GMAC, never an allocation.

    `before_decrypt()` runs once the key is found and before any segment is decrypted (the runtime
    waits there for its device check); what it raises fails the call with nothing decrypted.
    """
    locked = read_locked(f, label, key_for, name=name, role=role, salt=salt, expected_size=expected_size)
    bounded = expected_size is not None or max_size is not None
    return decrypt_locked(f, locked, label, bounded=bounded, max_size=max_size, before_decrypt=before_decrypt)


def decrypt_locked(
    f: IO[bytes],
    locked: Locked,
    label: str,
    *,
    bounded: bool,
    max_size: int | None = None,
    before_decrypt: Callable[[], None] | None = None,
) -> np.ndarray:
    """decrypt_file's second half, for a caller that has read and checked the header itself (read_locked)
    and `f` still positioned after it. `bounded`: the header's size was checked against a size the caller
    trusts (read_locked's `expected_size`, or `max_size` here)."""
    header, unlock = locked
    if max_size is not None and header.file_size > max_size:
        raise IntegrityError(f"{label}: its header makes it {header.file_size} bytes long, over the {max_size} allowed")
    if before_decrypt is not None:
        unlock = _then(unlock, before_decrypt)
    if not (matches_file_size(f, header, label) and bounded):
        cipher = unlock()
        unlock = lambda: cipher  # noqa: E731
    buf = owned_buffer(header.plaintext_length, file_offset=header.header_size)
    read_and_decrypt(f, header, label, unlock, buf.data)
    return buf


def _then(unlock: Callable[[], SegmentCipher], step: Callable[[], None]) -> Callable[[], SegmentCipher]:
    def unlock_then_step() -> SegmentCipher:
        cipher = unlock()
        step()
        return cipher

    return unlock_then_step


_HUGE_PAGE = 2 << 20
_HUGE_PAGE_LIMIT = 1 << 30
_MADV_HUGEPAGE = 14


def owned_buffer(size: int, *, file_offset: int = 0) -> np.ndarray:
    """A writable uint8 array over fresh memory that an OpenVINO tensor owns (the array's `.base`).

    Big buffers get one block of slack and are placed at an address congruent to `file_offset` (the
    file offset of their byte 0) modulo the O_DIRECT alignment, so reading a file into them can go
    around the page cache (_format/direct.py). OpenVINO then gets the region of its tensor (owning_tensor).

    Its pages are left out of core dumps (MADV_DONTDUMP, _hardening.py); forked children still read them.

    Up to 1 GiB, ask Linux for transparent huge pages, as numpy does for its own big arrays: reading
    and decrypting 512 MiB took a median 0.11 s with them and 0.19-0.25 s without. Beyond that the
    kernel's compaction to find that many huge pages costs more than it saves: 2 GiB took 1.4-4.9 s
    with them and 0.8-1.0 s without (benchmarks/RESULTS.md).
    """
    import openvino as ov

    slack = DIRECT_ALIGNMENT if size >= DIRECT_MIN_BYTES else 0
    buf: np.ndarray = ov.Tensor(ov.Type.u8, ov.Shape([size + slack])).data
    dont_dump(buf.ctypes.data, buf.nbytes)  # plaintext goes here: keep it out of core dumps (not out of fork)
    if slack:
        skew = (file_offset - buf.ctypes.data) % DIRECT_ALIGNMENT
        buf = buf[skew : skew + size]
    if sys.platform == "linux" and 2 * _HUGE_PAGE <= size <= _HUGE_PAGE_LIMIT:
        start = -(-buf.ctypes.data // _HUGE_PAGE) * _HUGE_PAGE
        end = (buf.ctypes.data + size) // _HUGE_PAGE * _HUGE_PAGE
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_HUGEPAGE)  # advice only
    return buf


def owning_tensor(buf: np.ndarray) -> ov.Tensor:
    """The OpenVINO tensor that owns `buf`'s memory (a region of it for a slice), so OpenVINO itself
    keeps the memory alive for as long as any model reads it.

    A slice's `.base` is the array over the tensor, not the tensor (numpy collapses chains of views only
    through arrays), so the chain is followed to its end: owned_buffer's big, O_DIRECT-placed buffers are
    such slices, and a non-owning tensor of them let an openvino_genai pipeline, which nothing can pin
    the buffer on, read freed weights.
    """
    import numpy as np
    import openvino as ov

    owner = buf.base
    while isinstance(owner, np.ndarray):
        owner = owner.base
    if not isinstance(owner, ov.Tensor):  # memory OpenVINO does not own: only the pin keeps it alive
        return ov.Tensor(buf, shared_memory=True)
    start = buf.ctypes.data - owner.data.ctypes.data
    if start == 0 and buf.nbytes == owner.get_byte_size():
        return owner
    return ov.Tensor(owner, ov.Coordinate([start]), ov.Coordinate([start + buf.nbytes]))


def model_from_memory(core: ov.Core, xml: np.ndarray, weights: np.ndarray) -> ov.Model:
    model = core.read_model(xml.tobytes(), owning_tensor(weights))
    xml.fill(0)
    pin_weights(model, weights)
    return model


def pin_weights(obj: object, weights: np.ndarray) -> None:
    """Keep the weights buffer alive exactly as long as the OpenVINO object that reads from it."""
    setattr(obj, WEIGHTS_ATTR, weights)
