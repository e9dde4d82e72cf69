"""Issue 9, item 4: forged input costs bounded work.

A header that claims a huge plaintext length (a sparse file, a few KiB on disk) must be refused before
anything is allocated for it; a failure wipes only memory that held plaintext; a cache entry that is
a FIFO, a symbolic link, another user's file or larger than its bound is a miss and never blocks; a
cache folder that other users can write to is not used.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from ovcrypt_runtime._errors import IntegrityError
from ovcrypt_runtime._format.spec import MIN_SEGMENT_SIZE, Header, Role, parse_header
from ovcrypt_runtime._format.writer import BufferSource, encrypt
from ovcrypt_runtime._loading import cache as _cache
from ovcrypt_runtime._loading import loader as _loader
from ovcrypt_runtime._loading.loader import decrypt_file
from tests.helpers import REPO, make_ir, sample_input
from tests.platforms import NEEDS_FIFO

SEG = MIN_SEGMENT_SIZE
CLAIM = 4 << 30  # what the forged header says: 4 GiB of plaintext
_LENGTH = struct.Struct(">Q")  # the plaintext length field, at offset 16 of the header


def encrypted(path: Path, key: bytes, plaintext: bytes, *, name: str = "m", role: Role = Role.BIN) -> Header:
    with path.open("wb") as f:
        return encrypt(key, BufferSource(plaintext), f, name=name, role=role)


def forge_length(path: Path, length: int) -> Header:
    """Claim `length` bytes of plaintext in the header and make the file exactly the size that implies,
    as a sparse file: on disk it stays a few MiB."""
    data = bytearray(path.read_bytes())
    data[16:24] = _LENGTH.pack(length)
    header = parse_header(bytes(data), "forged")[0]
    with path.open("r+b") as f:
        f.write(data[: header.header_size])
        f.truncate(header.file_size)
    return header


FORGED_CHILD = textwrap.dedent(
    """
    import resource, sys, time
    from pathlib import Path
    from ovcrypt_runtime._loading.loader import decrypt_file
    from ovcrypt_runtime._format.spec import Role
    import openvino  # imported before the baseline: the loader needs it anyway

    path, key, bound = Path(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3]
    kwargs = {} if bound == "none" else {bound: int(sys.argv[4])}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        with path.open("rb") as f:
            decrypt_file(f, "forged", lambda kid, label: key, name="m", role=Role.BIN, **kwargs)
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    else:
        outcome = "decrypted"
    seconds = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(f"{seconds:.3f} {grown} {outcome}")
    """
)


@pytest.mark.parametrize(
    ("bound", "message"),
    [("none", "header failed authentication"), ("expected_size", "the package lists"), ("max_size", "allowed")],
)
def test_sparse_file_claiming_a_huge_length_is_refused_fast_with_small_rss(
    tmp_path: Path, key: bytes, bound: str, message: str
) -> None:
    """Without a bound the header is authenticated first; with one, the claim is checked against it first.
    Either way nothing is allocated for the claim (run in a child to measure its peak RSS)."""
    path = tmp_path / "m.bin.ovc"
    real = encrypted(path, key, os.urandom(SEG + 5))
    forged = forge_length(path, CLAIM)
    assert path.stat().st_size == forged.file_size > CLAIM
    assert path.stat().st_blocks * 512 < 64 << 20, "the file is sparse"
    limit = str(real.file_size)
    result = subprocess.run(
        [sys.executable, "-c", FORGED_CHILD, str(path), key.hex(), bound, limit],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    seconds, grown_kib, outcome = result.stdout.split(" ", 2)
    assert outcome.startswith("IntegrityError: ") and message in outcome, outcome
    assert int(grown_kib) < 64 << 10, f"peak RSS grew by {int(grown_kib) >> 10} MiB for a forged header"
    assert float(seconds) < 2.0


def spy_order(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record whether the key was looked up (the header authenticated) before the buffer was allocated."""
    events: list[str] = []
    real = _loader.owned_buffer

    def owned_buffer(size: int, *, file_offset: int = 0) -> np.ndarray:
        events.append("allocate")
        return real(size, file_offset=file_offset)

    monkeypatch.setattr(_loader, "owned_buffer", owned_buffer)
    return events


def test_the_manifest_size_bounds_a_file_before_any_work(
    tmp_path: Path, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.bin.ovc"
    plaintext = os.urandom(3 * SEG + 5)
    header = encrypted(path, key, plaintext)
    events = spy_order(monkeypatch)

    def key_for(kid: bytes, label: str) -> bytes:
        events.append("key")
        return key

    # The real size: read while the key is found (the overlap is kept), and decrypted.
    with path.open("rb") as f:
        out = decrypt_file(f, "m", key_for, name="m", role=Role.BIN, expected_size=header.file_size)
    assert out.tobytes() == plaintext and events == ["allocate", "key"]
    # Any other size is refused before the key is looked up or anything allocated.
    events.clear()
    for expected in (header.file_size - 1, header.file_size + 1):
        with path.open("rb") as f, pytest.raises(IntegrityError, match=f"the package lists {expected}"):
            decrypt_file(f, "m", key_for, name="m", role=Role.BIN, expected_size=expected)
    assert events == []
    # Without a bound, the header is authenticated before the buffer is sized by it.
    with path.open("rb") as f:
        decrypt_file(f, "m", key_for, name="m", role=Role.BIN)
    assert events == ["key", "allocate"]


def test_a_failure_wipes_only_the_segments_that_held_plaintext(tmp_path: Path, key: bytes) -> None:
    """Segment 1 of 8 fails: segment 0 (decrypted) and 1 (failed) are zeroed, the rest never touched."""
    from ovcrypt_runtime._format.reader import decrypt_into, read_header
    from ovcrypt_runtime._format.spec import SegmentCipher

    path = tmp_path / "m.bin.ovc"
    header = encrypted(path, key, random.Random(1).randbytes(8 * SEG))
    data = bytearray(path.read_bytes())
    data[header.header_size + SEG + 3] ^= 1
    path.write_bytes(bytes(data))
    out = np.full(header.plaintext_length, 0xAA, np.uint8)
    with path.open("rb") as f:
        h, raw, tag = read_header(f, "m")
        cipher = SegmentCipher.open(key, h, raw, tag, "m")
        with pytest.raises(IntegrityError, match="segment 1 of 8"):
            decrypt_into(f, cipher, out.data, threads=1)
    assert not out[: 2 * SEG].any()
    assert (out[2 * SEG :] == 0xAA).all(), "memory that never held plaintext was written"


# --- the compiled-model cache -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled_entry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A good cache entry, written by the cache itself, and its key."""
    root = tmp_path_factory.mktemp("entry")
    xml = make_ir(root / "src" / "m.xml", 64 << 10)
    key = os.urandom(32)
    path = root / "cache" / ("ab" * 32 + _cache.SUFFIX)
    _cache.store(path, key, ov.Core().compile_model(str(xml), "CPU"))
    assert path.is_file()
    return path, key


@pytest.fixture
def cache(tmp_path: Path, compiled_entry: tuple[Path, bytes]) -> tuple[Path, bytes]:
    """A private cache folder holding a copy of the good entry."""
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    path = folder / compiled_entry[0].name
    path.write_bytes(compiled_entry[0].read_bytes())
    return path, compiled_entry[1]


def load(path: Path, key: bytes, **kwargs: int) -> ov.CompiledModel | None:
    return _cache.load(path, key, path.stem, ov.Core(), "CPU", {}, **kwargs)


def load_within(seconds: float, path: Path, key: bytes) -> ov.CompiledModel | None:
    """load(), which must return within `seconds` (a FIFO opened for reading would wait for a writer)."""
    result: list[ov.CompiledModel | None] = []
    thread = threading.Thread(target=lambda: result.append(load(path, key)), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():  # release the reader stuck in open(), so that the process can end
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail("loading the cache entry blocked")
    return result[0]


def test_a_good_entry_loads(cache: tuple[Path, bytes]) -> None:
    path, key = cache
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled = load(path, key, max_size=path.stat().st_size)
    assert compiled is not None
    assert np.asarray(compiled(sample_input())[0]).shape == (1, 64)


@NEEDS_FIFO
def test_a_fifo_entry_is_a_miss_and_never_blocks(cache: tuple[Path, bytes]) -> None:
    path, key = cache
    path.unlink()
    os.mkfifo(path)
    with pytest.warns(RuntimeWarning, match="not a regular file"):
        assert load_within(10, path, key) is None


def test_a_symlinked_entry_is_a_miss(cache: tuple[Path, bytes], tmp_path: Path) -> None:
    """Even to a genuine entry: a link could lead the runtime to read any file it can open."""
    path, key = cache
    elsewhere = tmp_path / "elsewhere.ovc"
    os.replace(path, elsewhere)
    path.symlink_to(elsewhere)
    with pytest.warns(RuntimeWarning, match="symbolic link"):
        assert load_within(10, path, key) is None
    assert elsewhere.is_file()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="changing a file's owner needs root")
def test_another_users_entry_is_a_miss(cache: tuple[Path, bytes]) -> None:
    path, key = cache
    os.chown(path, 12345, 12345)
    with pytest.warns(RuntimeWarning, match="belongs to user id 12345"):
        assert load(path, key) is None


def test_an_oversized_entry_is_a_miss(cache: tuple[Path, bytes]) -> None:
    path, key = cache
    with pytest.warns(RuntimeWarning, match="larger than"):
        assert load(path, key, max_size=path.stat().st_size - 1) is None
    assert path.is_file()


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_a_folder_others_can_write_to_is_not_used(cache: tuple[Path, bytes], compiled_entry: tuple[Path, bytes],
                                                  mode: int) -> None:  # fmt: skip
    path, key = cache
    path.parent.chmod(mode)
    with pytest.warns(RuntimeWarning, match="other users can write to it"):
        assert load(path, key) is None
    # Nor is anything written there.
    path.unlink()
    xml = compiled_entry[0].parent.parent / "src" / "m.xml"
    _cache.store(path, key, ov.Core().compile_model(str(xml), "CPU"))
    assert not path.exists()


def test_a_forged_entry_header_costs_no_allocation(cache: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry whose header claims 4 GiB: refused (and discarded) before its buffer is allocated."""
    path, key = cache
    forge_length(path, CLAIM)
    events = spy_order(monkeypatch)
    with pytest.warns(RuntimeWarning, match="discarded"):
        assert load(path, key) is None
    assert events == [] and not path.exists()
