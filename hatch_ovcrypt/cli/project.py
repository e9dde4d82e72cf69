"""`check` (validate a product's hook table as the build would) and `keygen` (a new key)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .common import EXIT_OK, CheckFailed, UsageError, VerbFactory


def cmd_keygen(args: argparse.Namespace) -> int:
    from ..runtime._keys import generate_key

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

    from ..checks import check_project, hook_table
    from ..config import HOOK_NAME, ConfigurationError

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




def register(make: VerbFactory) -> None:
    sub = make(
        "check", cmd_check, "validate a product's ovcrypt hook table exactly as the build would, without building"
    )
    sub.add_argument("project_dir", nargs="?", default=".", metavar="PROJECT_DIR", help="the product (default: .)")
    sub = make("keygen", cmd_keygen, "print a new 256-bit key (64 hex characters), or write it with mode 0600")
    sub.add_argument("--out", metavar="FILE", help="write the key to FILE (mode 0600) instead of printing it")
