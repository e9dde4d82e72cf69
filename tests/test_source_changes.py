"""Issue 9, item 1: the bytes the writer encrypts are exactly the bytes it derived the salt from.

The writer reads a source twice (salt fingerprint, then encryption). A source that changes in between,
even rewritten in place at the same length, must fail the write (its bytes would be encrypted under the
old bytes' file key and nonces) and leave no file behind. A file truncated while it is being
read must be a clear error, not a SIGBUS.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hatch_ovcrypt.hook.writer import encrypt_file
from ovcrypt_runtime._format import spec as _spec
from ovcrypt_runtime._format import writer as _writer
from ovcrypt_runtime._format.spec import MIN_SEGMENT_SIZE, Role
from ovcrypt_runtime._format.writer import BufferSource, FileSource, PlaintextSource, SourceChangedError, encrypt
from ovcrypt_runtime._loading.openssl import OpenSSLSource, encrypt_openssl_stream
from tests.helpers import REPO

# Run on Linux, and on macOS and Windows as simulated (tests/platforms.py, issue 21).
pytestmark = pytest.mark.usefixtures("simulated_platform")

SEG = MIN_SEGMENT_SIZE
SIZE = 3 * SEG + 4321  # four segments, the last one short


def plaintext(seed: int, size: int = SIZE) -> bytes:
    return random.Random(seed).randbytes(size)


class ChangingSource:
    """A source (sequential: no reader()) whose second read gives other bytes of the same length."""

    def __init__(self, first: bytes, second: bytes) -> None:
        self._reads = [first, second]
        self.length = len(first)

    def chunks(self, size: int) -> Iterator[memoryview]:
        data = memoryview(self._reads.pop(0) if len(self._reads) > 1 else self._reads[0])
        for start in range(0, self.length, size):
            yield data[start : start + size]


def between_passes(monkeypatch: pytest.MonkeyPatch, action: Callable[[], object]) -> None:
    """Run `action` after the fingerprint pass and before the encryption pass (derive_salt runs in between)."""
    def derive_salt(key: bytes, fields: bytes, fingerprint: bytes) -> bytes:
        action()
        return _spec.derive_salt(key, fields, fingerprint)

    monkeypatch.setattr(_writer, "derive_salt", derive_salt)


def rewrite_in_place(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes of the same file (same inode, same length), as an editor or a download might."""
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def assert_nothing_written(folder: Path) -> None:
    assert not list(folder.iterdir()), f"left behind: {sorted(p.name for p in folder.iterdir())}"


def recipe_file(path: Path, data: bytes, key: bytes, iv: bytes) -> Path:
    with path.open("wb") as f:
        encrypt_openssl_stream(io.BytesIO(data), f, key, iv)
    return path


SOURCE_KINDS = ["wrapper", "buffer", "file", "recipe"]


def make_changing_source(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[PlaintextSource, str]:
    """A source of `kind` whose bytes change between the passes (same length), and the label errors must name."""
    first, second = plaintext(1), plaintext(2)
    offset = 2 * SEG + 10  # inside the third segment
    changed = first[:offset] + second[offset : offset + 64] + first[offset + 64 :]
    if kind == "wrapper":
        return ChangingSource(first, changed), "plaintext of 'm'"
    if kind == "buffer":
        buf = bytearray(first)
        between_passes(monkeypatch, lambda: buf.__setitem__(slice(offset, offset + 64), second[offset : offset + 64]))
        return BufferSource(buf), "plaintext of 'm'"
    if kind == "file":
        path = tmp_path / "src" / "model.bin"
        path.parent.mkdir()
        path.write_bytes(first)
        between_passes(monkeypatch, lambda: rewrite_in_place(path, offset, second[offset : offset + 64]))
        return FileSource(path), str(path)
    assert kind == "recipe"
    key, iv = os.urandom(16), os.urandom(16)
    path = recipe_file(tmp_path / "model.bin.enc", first, key, iv)
    replacement = recipe_file(tmp_path / "changed.bin.enc", changed, key, iv).read_bytes()
    assert len(replacement) == path.stat().st_size
    between_passes(monkeypatch, lambda: rewrite_in_place(path, 0, replacement))
    return OpenSSLSource(path, key, iv, path.name), str(path)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_source_changed_between_passes_is_refused_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: bytes, kind: str, threads: int
) -> None:
    source, label = make_changing_source(kind, tmp_path, monkeypatch)
    monkeypatch.setattr(_writer, "default_threads", lambda: threads)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SourceChangedError, match="changed while it was being encrypted") as info:
        encrypt_file(key, source, out / "m.bin.ovc", name="m", role=Role.BIN)
    assert label in str(info.value)
    assert_nothing_written(out)  # the caller's atomic writer removed its temporary file


def test_unchanged_sources_of_every_kind_give_the_same_bytes(tmp_path: Path, key: bytes) -> None:
    data = plaintext(3)
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    rkey, iv = os.urandom(16), os.urandom(16)
    recipe = recipe_file(tmp_path / "model.bin.enc", data, rkey, iv)
    outputs = set()
    for threads in (1, 2, 3):
        for source in (FileSource(path), BufferSource(data), OpenSSLSource(recipe, rkey, iv, "r"),
                       ChangingSource(data, data)):  # fmt: skip
            out = io.BytesIO()
            encrypt(key, source, out, name="m", role=Role.BIN, threads=threads)
            outputs.add(out.getvalue())
    assert len(outputs) == 1


def test_source_that_changes_size_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: bytes) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(plaintext(4))
    between_passes(monkeypatch, lambda: path.write_bytes(plaintext(4, SIZE + 1)))
    out = tmp_path / "out"
    with pytest.raises(SourceChangedError, match="changed size"):
        encrypt_file(key, FileSource(path), out / "m.bin.ovc", name="m", role=Role.BIN)
    assert_nothing_written(out)


TRUNCATE_CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from ovcrypt_runtime._format.writer import FileSource, encrypt
    from ovcrypt_runtime._format.spec import Role

    path, when, threads = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    key = bytes(range(32))

    def cut(done=None):
        with path.open("r+b") as f:
            f.truncate(1 << 20)

    class Sink:
        def write(self, data):
            return len(data)

    import ovcrypt_runtime._format.writer as writer
    if when == "between":
        real = writer.derive_salt
        writer.derive_salt = lambda *args: (cut(), real(*args))[1]
    try:
        encrypt(key, FileSource(path), Sink(), name="m", role=Role.BIN, threads=threads,
                progress=cut if when == "during" else None)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
    else:
        print("no error")
    """
)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("when", ["between", "during"])
def test_file_truncated_while_encrypted_is_a_clear_error(tmp_path: Path, when: str, threads: int) -> None:
    """Run in a child process: a memory-mapped read of a truncated file would kill it with SIGBUS."""
    path = tmp_path / "model.bin"
    path.write_bytes(os.urandom(16 * SEG))
    result = subprocess.run(
        [sys.executable, "-c", TRUNCATE_CHILD, str(path), when, str(threads)],
        capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"child died (signal {-result.returncode}): {result.stderr[-2000:]}"
    assert result.stdout.startswith("SourceChangedError: "), result.stdout + result.stderr
    assert str(path) in result.stdout
    assert "truncated" in result.stdout or "changed size" in result.stdout
