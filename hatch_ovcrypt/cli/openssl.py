"""`openssl-encrypt` and `openssl-decrypt`: byte-identical to the OpenSSL recipe, for migration pipelines.

Keys and IVs are read from files, never from the command line, where they would show in process lists
and shell history.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ovcrypt_runtime._errors import KeyFormatError
from ovcrypt_runtime._loading.openssl import decrypt_openssl_stream, encrypt_openssl_stream, parse_hex16

from ..hook.progress import progress_for
from .common import EXIT_OK, UsageError, VerbFactory, read_small_file


def hex16_file(path_text: str, flag: str) -> bytes:
    try:
        return parse_hex16(read_small_file(path_text, flag), f"{flag} {path_text}")
    except KeyFormatError as exc:  # a malformed key or IV file is bad usage, like a malformed --key-file
        raise UsageError(str(exc)) from None


def cmd_openssl(args: argparse.Namespace) -> int:
    from ovcrypt_runtime._format.atomic import atomic_writer

    key = hex16_file(args.key_hex_file, "--key-hex-file")
    iv = hex16_file(args.iv_hex_file, "--iv-hex-file")
    src, dst = Path(args.input), Path(args.output)
    if not src.is_file():
        raise UsageError(f"{src} does not exist")
    with atomic_writer(dst) as f:  # written whole or not at all: bad padding leaves no partial output
        out = _Progress(f, progress_for(f"{args.verb} {src.name}", src.stat().st_size))
        if args.verb == "openssl-encrypt":
            with src.open("rb") as plain:
                encrypt_openssl_stream(plain, out, key, iv)
        else:
            decrypt_openssl_stream(src, out, key, iv)
    return EXIT_OK


class _Progress:
    """A writer that reports bytes written, for the progress line on a terminal."""

    def __init__(self, f: BinaryIO, report: Callable[[int], None] | None) -> None:
        self._f, self._report, self._done = f, report, 0

    def write(self, data: bytes | memoryview) -> int:
        self._done += len(data)
        if self._report:
            self._report(self._done)
        return self._f.write(data)


def register(make: VerbFactory) -> None:
    for verb, what in (("openssl-encrypt", "enc -aes-128-cbc"), ("openssl-decrypt", "enc -d -aes-128-cbc")):
        sub = make(verb, cmd_openssl, f"byte-identical to `openssl {what} -K .. -iv ..`, streaming")
        sub.add_argument("input", metavar="IN", help="file to read")
        sub.add_argument("output", metavar="OUT", help="file to write, whole or not at all")
        sub.add_argument("--key-hex-file", metavar="F", required=True, help="file holding the key, 32 hex characters")
        sub.add_argument("--iv-hex-file", metavar="F", required=True, help="file holding the IV, 32 hex characters")
