"""`hatch-ovcrypt` command line. Exit codes: 0 success, 1 a failed check, 2 bad usage.

Keys are never taken as arguments (they would show in process lists and shell history): they come
from `--key-file PATH` or from an environment variable (`$OVCRYPT_KEY`, or the one `--key-env` names).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from . import __version__
from .cli_common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CheckFailed, UsageError, fail, refuse_inline_keys
from .runtime._errors import OvcryptError

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "CheckFailed", "UsageError", "build_parser", "main"]


# --- verbs ------------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    from .runtime._keys import generate_key

    key = generate_key()
    if args.out is None:
        print(key)
        return EXIT_OK
    out = Path(args.out)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{out} exists; refusing to overwrite a key file") from None
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(out, 0o600)
    print(f"wrote a new key to {out} (mode 0600)", file=sys.stderr)
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from hatchling.builders.wheel import WheelBuilder

    from .checks import check_project, hook_table
    from .config import HOOK_NAME, ConfigurationError

    root = Path(args.project_dir).resolve()
    if not (root / "pyproject.toml").is_file():
        raise UsageError(f"{root} has no pyproject.toml")
    builder = WheelBuilder(str(root))
    table = hook_table(builder)
    if table is None:
        raise CheckFailed(f"{root / 'pyproject.toml'} has no [tool.hatch.build.targets.wheel.hooks.{HOOK_NAME}] table")
    plan, problems = check_project(table, root, builder)
    if plan is None:
        raise CheckFailed(str(ConfigurationError(problems)))
    names = ", ".join(spec.name for spec in plan.options.models)
    count = len(plan.options.models)
    print(f"ok: {count} model(s) ({names}) into {plan.package}._ovcrypt, key from ${plan.options.key_env}")
    return EXIT_OK


# --- parser -----------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (usage text and error would be two) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    from . import cli_files, cli_models, cli_rekey

    parser = _Parser(
        prog="hatch-ovcrypt",
        description="Encrypt OpenVINO IR models for wheels, and inspect, verify, rekey and load them.",
        allow_abbrev=False,  # `--new-key VALUE` must not pass for `--new-key-file`
    )
    parser.add_argument("--version", action="version", version=f"hatch-ovcrypt {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, func: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=text, description=text, allow_abbrev=False)
        sub.set_defaults(func=func)
        return sub

    sub = verb(
        "check", cmd_check, "validate a product's ovcrypt hook table exactly as the build would, without building"
    )
    sub.add_argument("project_dir", nargs="?", default=".", metavar="PROJECT_DIR")
    sub = verb("keygen", cmd_keygen, "print a new 256-bit key (64 hex characters), or write it with mode 0600")
    sub.add_argument("--out", metavar="FILE")
    for module in (cli_files, cli_rekey, cli_models):
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
