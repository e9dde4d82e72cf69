"""Reading around the page cache (ovcrypt_runtime/_format/direct.py): exact ranges, shared edge blocks, the fallback
to buffered reads, when O_DIRECT is chosen, and whole encrypted files decrypted that way."""

from __future__ import annotations

import itertools
import mmap
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ovcrypt_runtime._errors import IntegrityError
from ovcrypt_runtime._format import direct as _direct
from ovcrypt_runtime._format import reader as _reader
from ovcrypt_runtime._format.direct import ALIGNMENT, MIN_BYTES, RangeReader, open_direct
from ovcrypt_runtime._format.spec import Role
from ovcrypt_runtime._format.writer import BufferSource, encrypt
from ovcrypt_runtime._loading.loader import decrypt_file, owned_buffer

pytestmark = pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="O_DIRECT is Linux-only")

SIZE = 5 * ALIGNMENT * 64 + 1234  # ~1.3 MB, not a multiple of the block size
SENTINEL = 0xEE


def load(path: Path, key: bytes, name: str) -> np.ndarray:
    """The loader's path for one file: header, key, placed buffer, reading and decryption."""
    with path.open("rb") as f:
        return decrypt_file(f, "t", lambda _kid, _label: key, name=name, role=Role.BIN)


def evict(path: Path) -> None:
    """Drop a file's clean pages from the page cache (no root needed), as after a reboot."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        size = os.fstat(fd).st_size
        if _direct._cached(fd, (0, size // 2, size - 1)):  # tmpfs: the page cache is the storage
            pytest.skip(f"the page cache cannot be dropped for files in {path.parent}")
    finally:
        os.close(fd)


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = random.Random(1).randbytes(SIZE)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path, data


@pytest.fixture
def fds(data_file: tuple[Path, bytes]) -> Iterator[tuple[int, int]]:
    path = data_file[0]
    fd, direct = os.open(path, os.O_RDONLY), os.open(path, os.O_RDONLY | os.O_DIRECT)
    yield fd, direct
    os.close(fd)
    os.close(direct)


def placed(base: int, length: int, *, skew: int = 0) -> memoryview:
    """A sentinel-filled buffer whose byte 0 stands for file offset `base`, placed as the loader places
    it (address ≡ base mod ALIGNMENT), or `skew` bytes off that."""
    area = mmap.mmap(-1, length + 2 * ALIGNMENT)
    area.write(bytes([SENTINEL]) * len(area))
    start = base % ALIGNMENT + skew
    return memoryview(area)[start : start + length]  # the map lives as long as the view


RANGES = [(0, SIZE), (93, SIZE - 5), (4095, 4097), (4096, 8192), (100, 200), (5000, 3 * ALIGNMENT + 17),
          (ALIGNMENT - 1, 2 * ALIGNMENT + 1), (SIZE - 300, SIZE)]  # fmt: skip


@pytest.mark.parametrize(("lo", "hi"), RANGES, ids=[f"{lo}-{hi}" for lo, hi in RANGES])
@pytest.mark.parametrize("step", [1, 4096, 100_000, SIZE])
def test_reader_fills_exactly_its_range(data_file: tuple[Path, bytes], fds: tuple[int, int], lo: int, hi: int,
                                        step: int) -> None:  # fmt: skip
    _, data = data_file
    base = 93  # like a header: the buffer's byte 0 is file byte 93
    lo = max(lo, base)
    out = placed(base, SIZE - base)
    reader = RangeReader(*fds, out, base, lo, hi, "t")
    for end in range(lo + step, hi + step, step):
        reader.read_to(end)
    assert reader.direct is not None, "fell back to buffered reads: the placement is wrong"
    got = bytes(out)
    assert got[lo - base : hi - base] == data[lo:hi]
    assert set(got[: lo - base]) <= {SENTINEL} and set(got[hi - base :]) <= {SENTINEL}, "wrote outside its range"


def test_neighbours_share_an_edge_block(data_file: tuple[Path, bytes], fds: tuple[int, int]) -> None:
    """Ranges that meet inside a block, read at once by their own threads, never overwrite each other."""
    _, data = data_file
    cuts = [0, 4097, 4098, 3 * ALIGNMENT - 1, 200_001, SIZE]
    out = placed(0, SIZE)
    readers = [RangeReader(*fds, out, 0, lo, hi, "t") for lo, hi in itertools.pairwise(cuts)]
    threads = [threading.Thread(target=r.read_to, args=(r.hi,)) for r in readers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bytes(out) == data
    assert all(r.direct is not None for r in readers)


def test_misplaced_buffer_falls_back_to_buffered_reads(data_file: tuple[Path, bytes], fds: tuple[int, int]) -> None:
    _, data = data_file
    out = placed(0, SIZE, skew=1)
    reader = RangeReader(*fds, out, 0, 0, SIZE, "t")
    reader.read_to(SIZE)
    assert reader.direct is None and bytes(out) == data


def test_truncated_file_is_an_integrity_error(data_file: tuple[Path, bytes], fds: tuple[int, int]) -> None:
    out = placed(0, SIZE + 5000)
    with pytest.raises(IntegrityError, match="truncated"):
        RangeReader(*fds, out, 0, 0, SIZE + 5000, "t").read_to(SIZE + 5000)


def test_open_direct_only_for_big_uncached_well_placed_files(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(MIN_BYTES + 3 * ALIGNMENT))
    fd = os.open(path, os.O_RDONLY)
    probes = (0, MIN_BYTES // 2, MIN_BYTES)
    out = placed(0, MIN_BYTES)
    try:
        assert open_direct(fd, out, 0, probes) is None, "just written: in the page cache, read buffered"
        evict(path)
        assert open_direct(fd, out[: MIN_BYTES - 1], 0, probes) is None, "too small to be worth it"
        assert open_direct(fd, out, 1, probes) is None, "not placed for it"
        direct = open_direct(fd, out, 0, probes)
        assert direct is not None
        assert os.path.samestat(os.fstat(direct), os.fstat(fd))
        os.close(direct)
    finally:
        os.close(fd)


@pytest.fixture
def spy_direct(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """What open_direct decided on each read of a whole file."""
    decisions: list[int | None] = []
    real = _direct.open_direct

    def spy(*args: object) -> int | None:
        result = real(*args)  # type: ignore[arg-type]
        decisions.append(result)
        return result

    monkeypatch.setattr(_reader, "open_direct", spy)
    return decisions


@pytest.mark.parametrize("name", ["m", "a-longer-model-name"])  # two header sizes, two placements
def test_cold_encrypted_file_is_read_around_the_page_cache(tmp_path: Path, key: bytes, spy_direct: list[int | None],
                                                          name: str) -> None:  # fmt: skip
    plaintext = np.random.default_rng(2).integers(0, 256, MIN_BYTES + 3 * (1 << 20) + 77, np.uint8).tobytes()
    path = tmp_path / "m.bin.ovc"
    with path.open("wb") as f:
        encrypt(key, BufferSource(plaintext), f, name=name, role=Role.BIN)
    evict(path)
    buf = load(path, key, name)
    assert spy_direct and spy_direct[0] is not None
    assert buf.tobytes() == plaintext
    # the same file, now cached, is read buffered
    assert load(path, key, name).tobytes() == plaintext
    assert spy_direct[1] is None


def test_tampered_cold_file_read_directly_is_refused(tmp_path: Path, key: bytes, spy_direct: list[int | None]) -> None:
    plaintext = os.urandom(MIN_BYTES + 5)
    path = tmp_path / "m.bin.ovc"
    with path.open("wb") as f:
        header = encrypt(key, BufferSource(plaintext), f, name="m", role=Role.BIN)
    data = bytearray(path.read_bytes())
    data[header.header_size + 7 * (1 << 20) + 4095] ^= 0x40  # just before a block boundary mid-file
    path.write_bytes(bytes(data))
    evict(path)
    with pytest.raises(IntegrityError, match="segment 7 of"):
        load(path, key, "m")
    assert spy_direct[0] is not None


def test_owned_buffer_is_placed_for_direct_reads() -> None:
    for offset in (0, 93, 4095, 4096 + 17):
        buf = owned_buffer(MIN_BYTES, file_offset=offset)
        assert buf.nbytes == MIN_BYTES and buf.flags.writeable
        assert (buf.ctypes.data - offset) % ALIGNMENT == 0


def test_the_aligned_middle_really_goes_around_the_page_cache(
    data_file: tuple[Path, bytes], fds: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """All but the two partial edge blocks is read with the O_DIRECT descriptor."""
    _, data = data_file
    through: dict[int, int] = {}
    real = _direct.pread_exact

    def counting(fd: int, view: memoryview, offset: int, label: str) -> memoryview:
        through[fd] = through.get(fd, 0) + len(view)
        return real(fd, view, offset, label)

    monkeypatch.setattr(_direct, "pread_exact", counting)
    lo, hi = 93, SIZE - 5
    out = placed(lo, hi - lo)
    reader = RangeReader(*fds, out, lo, lo, hi, "t")
    for end in range(lo + (1 << 16), hi + (1 << 16), 1 << 16):
        reader.read_to(end)
    assert bytes(out) == data[lo:hi]
    assert through == {fds[1]: (hi - hi % ALIGNMENT) - (lo - lo % ALIGNMENT + ALIGNMENT)}


def test_a_file_read_directly_is_cached_for_the_next_start(tmp_path: Path, key: bytes,
                                                           spy_direct: list[int | None]) -> None:  # fmt: skip
    """O_DIRECT leaves the page cache alone; the loader then asks the kernel to cache the file, so a
    restart reads memory (it is the kernel's choice, so this waits a little for it)."""
    path = tmp_path / "m.bin.ovc"
    with path.open("wb") as f:
        encrypt(key, BufferSource(os.urandom(MIN_BYTES + 9)), f, name="m", role=Role.BIN)
    evict(path)
    load(path, key, "m")
    assert spy_direct[0] is not None
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(100):
            if _direct._cached(fd, (0, size // 2, size - 1)):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the file was not cached after a direct read")
    finally:
        os.close(fd)
