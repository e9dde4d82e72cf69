"""Finding plaintext model bytes anywhere: every 32-byte window of every plaintext, at every offset of every blob.

Each window of a plaintext (at every offset, not sampled) and of a scanned blob gets a 64-bit hash made from the
four little-endian 64-bit words it holds; numpy compares the sorted plaintext hashes with the blob's, and every
match is then confirmed byte for byte. Windows of fewer than 5 distinct bytes (runs of spaces, zero padding) are
common to every file and are not counted as leaks.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.helpers import WINDOW

_MULT = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


def _words(data: bytes) -> np.ndarray:
    """The little-endian uint64 starting at every offset of `data` (len(data) - 7 of them)."""
    n = len(data) - 7
    out = np.empty(max(n, 0), dtype=np.uint64)
    for shift in range(8):
        target = out[shift::8]
        if len(target):
            words = np.frombuffer(data, dtype="<u8", offset=shift, count=(len(data) - shift) // 8)
            target[:] = words[: len(target)]
    return out


def window_hashes(data: bytes) -> np.ndarray:
    """A 64-bit hash of the 32-byte window at every offset of `data`."""
    count = len(data) - WINDOW + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    w = _words(data)
    hashes: np.ndarray = w[:count] * _MULT[0] + w[8 : 8 + count] * _MULT[1] + w[16 : 16 + count] * _MULT[2]
    hashes += w[24 : 24 + count]
    return hashes


@dataclass
class LeakScanner:
    """Plaintexts to look for; `scan_*` return the names of the blobs that hold any of their windows."""

    plaintexts: dict[str, bytes]
    windows: int = 0  # distinct plaintext windows looked for
    bytes_scanned: int = 0
    blobs_scanned: int = 0
    _hashes: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for label, data in self.plaintexts.items():
            assert len(data) >= WINDOW, label
            self._hashes[label] = np.sort(window_hashes(data))
            self.windows += len(data) - WINDOW + 1

    @classmethod
    def of_files(cls, paths: Iterable[Path]) -> LeakScanner:
        return cls({str(p): p.read_bytes() for p in paths})

    def leaks_in(self, blob: bytes) -> list[str]:
        """Which plaintexts have a (non-trivial) 32-byte window in `blob`."""
        self.bytes_scanned += len(blob)
        self.blobs_scanned += 1
        hashes = window_hashes(blob)
        ordered = np.sort(hashes)  # sorted queries make searchsorted cache-friendly
        found = []
        for label, known in self._hashes.items():
            if not len(hashes):
                break
            idx = np.minimum(np.searchsorted(known, ordered), len(known) - 1)
            matched = np.unique(ordered[known[idx] == ordered])
            if not len(matched):
                continue
            for offset in np.flatnonzero(np.isin(hashes, matched)):
                window = blob[int(offset) : int(offset) + WINDOW]
                if len(set(window)) > 4 and window in self.plaintexts[label]:
                    found.append(label)
                    break
        return found

    def scan_blobs(self, blobs: Iterable[tuple[str, bytes]]) -> list[str]:
        return [f"{name} holds {label}" for name, blob in blobs for label in self.leaks_in(blob)]

    def scan_tree(self, root: Path, *, exclude: Iterable[Path] = ()) -> list[str]:
        """Every file under `root` (archives also member by member), except those under `exclude`."""
        return self.scan_blobs(tree_blobs(root, exclude=exclude))


def tree_blobs(root: Path, *, exclude: Iterable[Path] = ()) -> Iterator[tuple[str, bytes]]:
    skip = [p.resolve() for p in exclude]
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        resolved = path.resolve()
        if any(resolved == s or s in resolved.parents for s in skip):
            continue
        try:
            data = path.read_bytes()
        except OSError:  # e.g. a socket or a file removed meanwhile
            continue
        yield str(path), data
        yield from archive_blobs(str(path), data)


def archive_blobs(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """The members of a zip (wheel) or tar (sdist) archive, decompressed."""
    buf = io.BytesIO(data)
    if zipfile.is_zipfile(buf):
        with zipfile.ZipFile(buf) as zf:
            for info in zf.infolist():
                yield f"{name}!{info.filename}", zf.read(info)
        return
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            for member in tf.getmembers():
                f = tf.extractfile(member)
                if f is not None:
                    yield f"{name}!{member.name}", f.read()
