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
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

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
