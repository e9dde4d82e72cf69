"""Reading ciphertext into its final buffer, around the page cache (O_DIRECT) when that pays off.

A buffered read of a file that is not cached makes the kernel first fill the page cache (fresh memory,
which on a VM is costly to fault in) and then copy it into the buffer. With O_DIRECT the disk writes
straight into the buffer. Measured here, 512 MiB from a cold page cache into the loader's huge-page
buffer, 4 workers, 5 alternating runs: 235-319 ms with O_DIRECT, 482-768 ms buffered
(benchmarks/RESULTS.md). A file that is already cached is read buffered: copying memory beats the disk.

O_DIRECT needs file offsets, lengths and buffer addresses aligned to the device's block size. The
loader places the buffer so that its addresses and the file offsets agree modulo ALIGNMENT; the few
bytes at either end of a worker's range that fall inside a block shared with its neighbour are read
through a one-block scratch buffer, so no worker ever writes outside its own range.

Reads at an offset (`read_at`) use what the platform has: preadv straight into the buffer (Linux, the BSDs),
else pread and a copy (macOS builds without preadv), else seek and readinto under a lock (Windows, whose Python
has neither): every platform reads the same bytes, only the last one a reader at a time.
"""

from __future__ import annotations

import ctypes
import errno
import io
import mmap
import os
import threading

from .._errors import IntegrityError

ALIGNMENT = 4096  # covers devices with 512-byte and 4 KiB logical blocks
MIN_BYTES = 16 << 20  # below this the page cache costs little, and most models of that size are cached


def _down(offset: int) -> int:
    return offset - offset % ALIGNMENT


def _up(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT


def open_direct(fd: int, out: memoryview, file_offset: int, probes: tuple[int, ...]) -> int | None:
    """An O_DIRECT descriptor of the file open as `fd`, for reading into `out` (whose byte 0 is the file's
    byte `file_offset`); None when buffered reads are the better choice or O_DIRECT is not possible.

    `probes` are file offsets that tell whether the file is in the page cache: if all are, it is read buffered.
    """
    if not hasattr(os, "O_DIRECT") or len(out) < MIN_BYTES or out.readonly:
        return None
    if (ctypes.addressof(ctypes.c_char.from_buffer(out)) - file_offset) % ALIGNMENT:
        return None  # not placed for it (a caller's own buffer)
    if _cached(fd, probes):
        return None
    try:  # the same open file, reopened: /proc/self/fd names the inode, not a path that could change
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:  # no /proc, or a file system without O_DIRECT
        return None


def _cached(fd: int, probes: tuple[int, ...]) -> bool:
    nowait = getattr(os, "RWF_NOWAIT", None)
    if nowait is None or not hasattr(os, "preadv"):
        return False
    byte = bytearray(1)
    for offset in probes:
        try:  # RWF_NOWAIT: fails with EAGAIN instead of waiting for the disk
            if os.preadv(fd, [byte], offset, nowait) != 1:
                return False
        except OSError:
            return False
    return True


def positional_reads() -> bool:
    """Whether this platform reads at an offset without moving a shared file position (pread or preadv), so
    that several threads can read one descriptor at once."""
    return hasattr(os, "preadv") or hasattr(os, "pread")


# Without pread, a read at an offset is a seek and a read of the descriptor's one position: one at a time.
_SEEK_LOCK = threading.Lock()


def read_at(fd: int, view: memoryview, offset: int) -> int:
    """Read up to len(view) bytes of `fd` at file offset `offset` into `view`; the count read (0 at the end).

    preadv reads into `view` itself; pread returns a copy that is copied in; without either (Windows) the
    descriptor is seeked and read under a lock, which moves its file position."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    if hasattr(os, "pread"):
        data = os.pread(fd, len(view), offset)
        view[: len(data)] = data
        return len(data)
    with _SEEK_LOCK:
        os.lseek(fd, offset, os.SEEK_SET)
        with io.FileIO(fd, "rb", closefd=False) as f:
            return f.readinto(view) or 0


def pread_exact(fd: int, view: memoryview, offset: int, label: str) -> memoryview:
    """Fill `view` with the bytes of `fd` at `offset` (read_at); IntegrityError naming `label` if it ends first."""
    done = 0
    while done < len(view):
        n = read_at(fd, view[done:], offset + done)
        if not n:
            raise IntegrityError(f"{label}: file is truncated")
        done += n
    return view


class RangeReader:
    """Reads the file bytes [lo, hi) into `out[lo - base : hi - base]`, in order, as they are asked for.

    With `direct` (an O_DIRECT descriptor) the block-aligned middle is read around the page cache and
    the partial blocks at the ends through a scratch block; without it, or if the file system refuses
    an O_DIRECT read, everything is read through `fd`.
    """

    def __init__(self, fd: int, direct: int | None, out: memoryview, base: int, lo: int, hi: int, label: str) -> None:
        self.fd, self.direct, self.out, self.base, self.lo, self.hi, self.label = fd, direct, out, base, lo, hi, label
        self.done = lo  # bytes [lo, done) are in place

    def read_to(self, end: int) -> None:
        """Make sure the file bytes [lo, end) are in place."""
        end = min(end, self.hi)
        if self.done < end and self.direct is not None:
            aligned_lo, aligned_hi = _up(self.lo), _down(self.hi)
            if self.done < aligned_lo:  # the partial block at the start, shared with the previous range
                self._through_scratch(self.done, min(aligned_lo, self.hi))
            stop = min(_up(end), aligned_hi)
            if self.direct is not None and stop > self.done:
                self._direct(self.done, stop)
            if self.direct is not None and self.done < end:  # the partial block at the end, shared with the next
                self._through_scratch(self.done, self.hi)
        if self.done < end:  # no O_DIRECT, or the file system refused it
            self._buffered(self.done, end)

    def _view(self, start: int, stop: int) -> memoryview:
        return self.out[start - self.base : stop - self.base]

    def _buffered(self, start: int, stop: int) -> None:
        pread_exact(self.fd, self._view(start, stop), start, self.label)
        self.done = stop

    def _direct(self, start: int, stop: int) -> None:
        assert self.direct is not None
        try:
            pread_exact(self.direct, self._view(start, stop), start, self.label)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.direct = None  # this file system or device wants another alignment: read_to reads buffered
            return
        self.done = stop

    def _through_scratch(self, start: int, stop: int) -> None:
        """[start, stop) lies within one block: read that whole block aside and copy the part needed."""
        assert self.direct is not None
        block = _down(start)
        with mmap.mmap(-1, ALIGNMENT) as scratch:  # page-aligned, as O_DIRECT wants
            try:
                got = os.preadv(self.direct, [scratch], block)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                got = -1
            if got >= stop - block:
                self._view(start, stop)[:] = scratch[start - block : stop - block]
                self.done = stop
                return
        if got >= 0:
            raise IntegrityError(f"{self.label}: file is truncated")
        self.direct = None
