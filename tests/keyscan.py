"""Finding key material in the locals of a raised error's traceback, as error reporters see them.

Sentry, rich tracebacks and pytest --showlocals record repr() of every local of every frame of an
error's traceback. `assert_no_key_in_locals(exc, *secrets)` fails if any frame that the error went
through (outside the tests themselves), or of any error chained to it (suppressed or not), holds one
of the secrets: as a local, inside a local's repr(), as hex, or inside a bytes-like local. Each
32-byte secret also brings the keys derived from it without a salt (docs/FORMAT.md section 2).
"""

from __future__ import annotations

import contextlib
import hmac
import sys
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import CodeType, FrameType, ModuleType
from typing import Any

TESTS = Path(__file__).resolve().parent
_INFOS = (b"hatch-ovcrypt/v1/salt-key", b"hatch-ovcrypt/v1/fingerprint-key", b"hatch-ovcrypt/v1/manifest-mac")


def _hkdf(key: bytes, salt: bytes | None, info: bytes) -> bytes:
    prk = hmac.digest(salt or bytes(32), key, "sha256")
    return hmac.digest(prk, info + b"\x01", "sha256")


def file_key(key: bytes, salt: bytes) -> bytes:
    """The key of one file (docs/FORMAT.md section 2), to pass as a secret too."""
    return _hkdf(key, salt, b"hatch-ovcrypt/v1/file-key")


def _needles(secrets: tuple[bytes | str, ...]) -> tuple[list[bytes], list[str]]:
    """The byte strings and the text forms (repr inner text, hex) to look for."""
    raw: list[bytes] = []
    for secret in secrets:
        if isinstance(secret, str):
            raw.append(secret.encode())
            continue
        raw.append(secret)
        if len(secret) == 32:
            raw += [_hkdf(secret, None, info) for info in _INFOS]
    texts = []
    for value in raw:
        texts += [repr(value)[2:-1], value.hex(), value.hex().upper()]
        with contextlib.suppress(UnicodeDecodeError):
            texts.append(value.decode("ascii"))
    return raw, [t for t in texts if len(t) >= 16]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]


def _frames(exc: BaseException) -> Iterator[FrameType]:
    tb = exc.__traceback__
    while tb is not None:
        if not Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(TESTS):
            yield tb.tb_frame
        tb = tb.tb_next


def _found(value: object, raw: list[bytes], texts: list[str]) -> bool:
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if any(secret in data for secret in raw):
            return True
    try:
        text = value if isinstance(value, str) else repr(value)
    except Exception:  # a repr that fails shows nothing
        return False
    return any(t in text for t in texts)


def key_locals(exc: BaseException, *secrets: bytes | str) -> list[str]:
    """`function:line local` of every frame local (or captured repr) where a secret shows."""
    raw, texts = _needles(secrets)
    hits = []
    for error in _chain(exc):
        for frame in _frames(error):
            for name, value in frame.f_locals.items():
                if _found(value, raw, texts):
                    hits.append(f"{frame.f_code.co_name}:{frame.f_lineno} {name}")
    # What traceback's own capture shows (only the chain it would print).
    captured = traceback.TracebackException(type(exc), exc, exc.__traceback__, capture_locals=True)
    for summary in _summaries(captured):
        for frame_summary in summary.stack:
            if Path(frame_summary.filename).resolve().is_relative_to(TESTS):
                continue
            for name, text in (frame_summary.locals or {}).items():
                if any(t in text for t in texts):
                    hits.append(f"{frame_summary.name}:{frame_summary.lineno} {name} (captured)")
    return hits


def _summaries(captured: traceback.TracebackException) -> Iterator[traceback.TracebackException]:
    todo: list[traceback.TracebackException | None] = [captured]
    while todo:
        current = todo.pop()
        if current is not None:
            yield current
            todo += [current.__cause__, current.__context__]


def assert_no_key_in_locals(exc: BaseException, *secrets: bytes | str) -> None:
    """No frame of `exc`'s traceback, or of an error chained to it, holds any of `secrets` (see module)."""
    assert secrets
    hits = key_locals(exc, *secrets)
    assert not hits, f"{type(exc).__name__}: key material in traceback locals: {hits}"


def traceback_blobs(exc: BaseException) -> list[tuple[str, bytes]]:
    """What an error reporter could record of `exc` and the errors chained to it, as blobs to scan for plaintext
    (tests/leakscan.py): every frame local outside the tests (bytes-like and array locals as their bytes, text
    encoded, anything else as its repr), and the traceback as TracebackException renders it with its locals."""
    blobs: list[tuple[str, bytes]] = []
    for error in _chain(exc):
        for frame in _frames(error):
            for name, value in frame.f_locals.items():
                label = f"{frame.f_code.co_name}:{frame.f_lineno} {name}"
                blobs.append((label, _as_bytes(value)))
    captured = traceback.TracebackException(type(exc), exc, exc.__traceback__, capture_locals=True)
    blobs.append(("rendered traceback with locals", "".join(captured.format()).encode("utf-8", "replace")))
    return blobs


def _as_bytes(value: object) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "replace")
    tobytes = getattr(value, "tobytes", None)  # numpy arrays (the loader's buffers)
    if callable(tobytes):
        with contextlib.suppress(Exception):
            data = tobytes()
            if isinstance(data, bytes):
                return data
    try:
        return repr(value).encode("utf-8", "replace")
    except Exception:  # a repr that fails shows nothing
        return b""


# --- finding every function that holds a key, and failing it there ----------------------------------

PACKAGE = TESTS.parent / "hatch_ovcrypt"
RUNTIME = TESTS.parent / "runtime" / "ovcrypt_runtime"
TRACED = (str(PACKAGE), str(RUNTIME))  # the plugin and the runtime it imports
_FORGET_WRAPPERS = ("wrapper", "generator")  # forget_keys's inner functions (ovcrypt_runtime/_format/spec.py)


class Injected(BaseException):  # not an error: an interruption, as KeyboardInterrupt is
    """Raised into a function at a line where it holds a key: any failure could happen there (an interrupt, a
    full disk, an OpenVINO error). A BaseException, so that no `except Exception` turns it into a message."""


class KeyHolders:
    """A tracer (sys.settrace) over hatch_ovcrypt's own code that records each function in which a local holds
    one of `secrets` at some line (as in `key_locals`; also inside a mapping such as os.environ, and inside
    buffers up to 1 MiB), and whether forget_keys's wrapper is on the stack at or above that frame.

    The calling thread only: the reader's worker threads hand their errors to it, whose forget_keys then clears
    their frames too (test_tampered_file_under_the_right_key fails them there).

    With `inject` (a code object), it raises Injected into the first frame of that code at the first line where
    a local holds a secret, and then stops tracing.
    """

    def __init__(self, *secrets: bytes | str, inject: CodeType | None = None) -> None:
        self._raw, self._texts = _needles(secrets)
        self.inject = inject
        self.holders: dict[CodeType, tuple[int, list[str], bool]] = {}  # code -> (first line, locals, covered)
        self.injected = False
        self._spec_file = str(RUNTIME / "_format" / "spec.py")

    def __enter__(self) -> KeyHolders:
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(None)

    def _global(self, frame: FrameType, event: str, arg: object) -> Any:
        if self.injected or not frame.f_code.co_filename.startswith(TRACED) or self._is_wrapper(frame):
            return None  # forget_keys's own wrapper holds its arguments by design, and drops them
        return self._local

    def _local(self, frame: FrameType, event: str, arg: object) -> Any:
        if self.injected or event not in ("line", "return"):
            return self._local
        names = [name for name, value in frame.f_locals.items() if self._holds(value)]
        if not names:
            return self._local
        code = frame.f_code
        if code not in self.holders:
            self.holders[code] = (frame.f_lineno, names, self._covered(frame))
        if code is self.inject:  # at a line, or as it returns (raising there fails the call all the same)
            self.injected = True
            sys.settrace(None)
            raise Injected(f"injected into {code.co_name} at line {frame.f_lineno}, where {names} hold a key")
        return self._local

    def _is_wrapper(self, frame: FrameType) -> bool:
        return frame.f_code.co_filename == self._spec_file and frame.f_code.co_name in _FORGET_WRAPPERS

    def _covered(self, frame: FrameType | None) -> bool:
        while frame is not None:
            if self._is_wrapper(frame):
                return True
            frame = frame.f_back
        return False

    def _holds(self, value: object) -> bool:
        if isinstance(value, (bytes, bytearray)):
            return len(value) <= 1 << 20 and any(secret in value for secret in self._raw)
        if isinstance(value, memoryview) or type(value).__name__ == "ndarray":  # decrypted buffers, segments
            with contextlib.suppress(Exception):
                data = memoryview(value).cast("B")  # type: ignore[arg-type]
                return data.nbytes <= 1 << 20 and any(secret in data.tobytes() for secret in self._raw)
            return False
        if isinstance(value, str):
            return any(t in value for t in self._texts)
        if isinstance(value, Mapping):
            with contextlib.suppress(Exception):
                return any(self._holds(v) for v in list(value.values())[:10_000])
            return False
        if isinstance(value, (int, float, Path, ModuleType, type)) or callable(value):
            return False
        if type(value).__module__ == "numpy":
            return False
        try:
            text = repr(value)
        except Exception:  # a repr that fails shows nothing
            return False
        return any(t in text for t in self._texts)

    def uncovered(self) -> list[str]:
        return [f"{c.co_name} ({Path(c.co_filename).name}:{line}: {', '.join(names)})"
                for c, (line, names, covered) in self.holders.items() if not covered]  # fmt: skip
