"""What every `hatch-ovcrypt` verb shares: exit-code exceptions, keys, and path arguments.

It imports nothing heavy (no openvino, no hatchling), so `inspect` stays fast and key-free.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ovcrypt_runtime._errors import KeyFormatError, KeyMissingError, WrongKeyError
from ovcrypt_runtime._format.manifest import is_env_name
from ovcrypt_runtime._format.spec import forget_keys, key_id
from ovcrypt_runtime._keys.sources import keys_from_environment, read_key_file

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_KEY_ENV = "OVCRYPT_KEY"
ENCRYPTED_SUFFIX = ".ovc"
# A 256-bit key (64 hex) or an OpenSSL-recipe key/IV (32 hex) typed as an argument.
_KEYLIKE = re.compile(r"(?:[0-9a-fA-F]{32}){1,2}\Z")
# Flags people reach for to pass a key inline; none exists, on purpose.
_KEY_FLAGS = frozenset(
    {"--key", "--new-key", "-K", "--key-hex", "--iv-hex", "-iv", "--iv", "--openssl-key-hex", "--openssl-iv-hex"}
)
NO_INLINE_KEYS = (
    "keys are never taken as arguments (they would show in process lists and shell history): "
    "use --key-file PATH, or set $OVCRYPT_KEY (or the variable --key-env names)"
)

# `make(name, func, help)` adds one verb's sub-parser; each cli_* module registers its verbs through it.
VerbFactory = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


class UsageError(Exception):
    """Bad usage: exit code 2."""


class CheckFailed(Exception):
    """A check that ran and failed (bad file, wrong key): exit code 1."""


def fail(message: str) -> None:
    """An error report on stderr: one line (only `check` lists several problems, one per line)."""
    sys.stderr.write(f"hatch-ovcrypt: error: {message.removeprefix('hatch-ovcrypt: ')}\n")


def refuse_inline_keys(argv: Sequence[str]) -> None:
    """Refuse a key typed on the command line before argparse can echo it back in an error message."""
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if flag in _KEY_FLAGS and (eq or flag == arg):
            raise UsageError(f"there is no {flag} option: {NO_INLINE_KEYS}")
        for text in (arg, value):
            if text and _KEYLIKE.match(text) and not Path(text).exists():
                raise UsageError(f"an argument looks like a key: {NO_INLINE_KEYS}")


# --- keys -------------------------------------------------------------------------------------


def add_key_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--key-file", metavar="PATH", help="file holding the key (64 hex characters; several, comma-separated)"
    )
    sub.add_argument(
        "--data-key", metavar="FILE",
        help="a wrapped data key file: the key is unwrapped through the first of its holders that works here",
    )  # fmt: skip
    sub.add_argument(
        "--key-env",
        metavar="NAME",
        default=DEFAULT_KEY_ENV,
        help=f"environment variable holding the key (default {DEFAULT_KEY_ENV}; NAME_FILE may name a key file)",
    )


class Keys:
    """The keys one command was given, looked up by key id (several at once during a rotation)."""

    def __init__(self, keys: Iterable[bytes], source: str) -> None:
        self._keys = {key_id(key): key for key in keys}
        self.source = source

    def __repr__(self) -> str:  # key ids only, never key material
        return f"Keys({self.source!r}, key_ids=[{', '.join(self.ids)}])"

    @property
    def ids(self) -> list[str]:
        return [kid.hex() for kid in self._keys]

    def all(self) -> list[bytes]:
        return list(self._keys.values())

    @property
    def first(self) -> bytes:
        """The key new files are encrypted under (a list means "rotating: the first is the new key")."""
        return next(iter(self._keys.values()))

    @forget_keys
    def key_for(self, wanted: bytes, label: str) -> bytes:
        if wanted in self._keys:
            return self._keys[wanted]
        raise WrongKeyError(
            f"{label}: needs key id {wanted.hex()}, but {self.source} offers key id(s) {', '.join(self.ids)}"
        )


def _check_key_env(key_env: str) -> None:
    if not is_env_name(key_env):
        raise UsageError(f"--key-env {key_env!r} is not an environment variable name")


@forget_keys
def load_keys(key_file: str | None, key_env: str, flag: str = "--key-file") -> Keys:
    """Keys from `flag` PATH, else from $key_env (or the file $key_env_FILE names); bad or no key is usage."""
    _check_key_env(key_env)
    try:
        if key_file is not None:
            path = Path(key_file)
            if not path.is_file():
                raise UsageError(f"{flag} {path}: no such file (it takes a path to a file holding the key)")
            return Keys(read_key_file(path, flag), f"{flag} {path}")
        keys = list(keys_from_environment(key_env))
    except (KeyFormatError, KeyMissingError) as exc:
        raise UsageError(str(exc)) from None
    if not keys:
        raise UsageError(
            f"no key: pass {flag} PATH, or set ${key_env} (or ${key_env}_FILE, the path of a file holding the key)"
        )
    source = f"${key_env}" if key_env in os.environ else f"${key_env}_FILE"
    return Keys(keys, source)


def keys_from_args(args: argparse.Namespace) -> Keys:
    """The keys of a verb's key options: --data-key FILE (unwrapped through its holders), else load_keys."""
    if getattr(args, "data_key", None) is not None:
        if args.key_file is not None:
            raise UsageError("give --key-file or --data-key, not both")
        return unwrapped_keys(Path(args.data_key), args.key_env)
    return load_keys(args.key_file, args.key_env)


@forget_keys
def unwrapped_keys(path: Path, key_env: str) -> Keys:
    """The data key of a wrapped data key file, unwrapped through the first of its holders that works here
    (an age identity in $<key_env>_AGE_IDENTITY, a reachable transit server or KMS, a token and its PIN).
    Raises UsageError for a missing file, the holders' one-line errors (OvcryptError) when none works."""
    from ovcrypt_runtime._keys.holders import unwrap_first
    from ovcrypt_runtime._keys.holders.datakey import read_datakey

    _check_key_env(key_env)
    if not path.is_file():
        raise UsageError(f"--data-key {path}: no such file (it takes a wrapped data key file, as `datakey new` writes)")
    datakey = read_datakey(path)
    return Keys([unwrap_first(datakey.holders, datakey.context(), key_env, str(path))], f"--data-key {path}")


def read_small_file(path_text: str, flag: str) -> str:
    """The text of a small secret file (a hex key or IV), or a usage error naming the flag."""
    path = Path(path_text)
    try:
        return path.read_text("ascii")
    except FileNotFoundError:
        raise UsageError(f"{flag} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{flag} {path}: cannot be read ({type(exc).__name__})") from None


# --- paths ------------------------------------------------------------------------------------


def encrypted_files(paths: Iterable[str]) -> list[Path]:
    """Files named, with a directory standing for every *.ovc file under it; each file once, in order."""
    found: dict[Path, None] = {}
    for text in paths:
        path = Path(text)
        if path.is_dir():
            inside = sorted(p for p in path.rglob(f"*{ENCRYPTED_SUFFIX}") if p.is_file())
            if not inside:
                raise UsageError(f"{path} holds no encrypted files (*{ENCRYPTED_SUFFIX})")
            found.update(dict.fromkeys(inside))
        elif path.is_file():
            found[path] = None
        elif path.exists():
            raise UsageError(f"{path} is neither a file nor a directory")
        else:
            raise UsageError(f"{path} does not exist")
    return list(found)


def human_size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n:,} bytes ({n / scale:.1f} {unit})"
    return f"{n:,} bytes"
