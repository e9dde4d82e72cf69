"""`hatch-ovcrypt` command line: the parser and `main`. Each group of verbs is a module of this package.

Exit codes: 0 success, 1 a failed check, 2 bad usage.

Keys are never taken as arguments (they would show in process lists and shell history): they come
from `--key-file PATH` or from an environment variable (`$OVCRYPT_KEY`, or the one `--key-env` names).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from ovcrypt_runtime._errors import OvcryptError
from ovcrypt_runtime._format.spec import forget_keys

from .. import __version__
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CheckFailed, UsageError, fail, refuse_inline_keys

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "CheckFailed", "UsageError", "build_parser", "main"]


# --- parser -----------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (usage text and error would be two) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    from . import datakey, files, models, openssl, project, rekey

    parser = _Parser(
        prog="hatch-ovcrypt",
        description="Encrypt OpenVINO IR models for wheels, and inspect, verify, rekey and load them.",
        allow_abbrev=False,  # `--new-key VALUE` must not pass for `--new-key-file`
    )
    parser.add_argument("--version", action="version", version=f"hatch-ovcrypt {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, func: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=text, description=text, allow_abbrev=False)
        # Verbs hold keys and plaintext: an error that leaves one carries no frame holding either.
        sub.set_defaults(func=forget_keys(func))
        return sub

    for module in (project, files, rekey, models, openssl, datakey):
        module.register(verb)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        refuse_inline_keys(argv)  # before argparse, which would echo a stray key back in its error
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)
    except UsageError as exc:
        fail(str(exc))
        return EXIT_USAGE
    except (CheckFailed, OvcryptError) as exc:
        fail(str(exc))
        return EXIT_FAILED
    except BrokenPipeError:  # `hatch-ovcrypt inspect ... | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:
        fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
