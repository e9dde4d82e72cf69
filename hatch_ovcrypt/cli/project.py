"""`check` (validate a product's hook table as the build would) and `keygen` (a new key)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import EXIT_OK, CheckFailed, UsageError, VerbFactory

if TYPE_CHECKING:
    from ..checks.project import Plan


def cmd_keygen(args: argparse.Namespace) -> int:
    from ovcrypt_runtime._keys.sources import generate_key

    if args.signing:
        return _keygen_signing(args.out)
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


def _keygen_signing(out: str | None) -> int:
    from ..signing.file import generate_pair

    if out is None:
        raise UsageError("keygen --signing needs --out FILE (the private key; the public key goes to FILE.pub)")
    try:
        pub = generate_pair(Path(out))
    except FileExistsError as exc:
        raise UsageError(f"{exc.args[0]} exists; refusing to overwrite a key file") from None
    print(f"wrote a new ECDSA P-256 signing key to {out} (mode 0600) and its public key to {pub}", file=sys.stderr)
    print(f'use it with: signing-key = "file:{out}" and publisher-keys = ["{pub}"]', file=sys.stderr)
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from hatchling.builders.wheel import WheelBuilder

    from ovcrypt_runtime._format.spec import key_id

    from ..checks.dependencies import uv_cache_keys_hint
    from ..checks.plaintext import sdist_unchecked_warning
    from ..checks.project import check_project, hook_table
    from ..checks.pyproject import ProjectFileError, known_targets, misplaced_hook_tables, project_files
    from ..config import HOOK_NAME, ConfigurationError, display_path
    from ..sources.models import plaintext_paths

    root = Path(args.project_dir).resolve()
    if not (root / "pyproject.toml").is_file():
        raise UsageError(f"{root} has no pyproject.toml")
    try:
        misplaced = misplaced_hook_tables(project_files(root), known_targets())
    except ProjectFileError as exc:  # one line: file:line:column and what is wrong, not tomllib's traceback
        raise CheckFailed(str(exc)) from None
    with _hatchling_refusals(root / "pyproject.toml"):
        builder = WheelBuilder(str(root))
        builder.metadata.validate_fields()  # what a build checks first: name, version, dependencies
        table = hook_table(builder)
        if table is None:
            missing = (
                f"{root / 'pyproject.toml'} has no [tool.hatch.build.hooks.{HOOK_NAME}] table "
                f"(nor [tool.hatch.build.targets.wheel.hooks.{HOOK_NAME}])"
            )
            if len(misplaced) == 1:
                raise CheckFailed(f"{missing}; {misplaced[0]}")
            raise CheckFailed(str(ConfigurationError(misplaced)) if misplaced else missing)
        environ, source = _key_environment(table, args)
        plan, problems = check_project(table, root, builder, environ)
    if plan is None or misplaced:
        raise CheckFailed(str(ConfigurationError(misplaced + problems)))
    options = plan.options
    names = ", ".join(spec.name for spec in options.models)
    print(f"ok: {len(options.models)} model(s) ({names}) into {plan.package}._ovcrypt")
    _print_models(plan, root)
    print("settings:")
    written = set(table)
    # The runtime's extensions: the table's, with openvino_tokenizers added when an IR uses extension ops.
    settings = {
        "package": plan.package, "key-env": options.key_env, "key-provider": options.key_provider or "none",
        "segment-size": options.segment_size, "extensions": ", ".join(plan.extensions) or "none",
        "allow-plaintext-sdist": str(options.allow_plaintext_sdist).lower(),
        "compiled-model-cache": str(options.compiled_model_cache).lower(),
        "signing-key": options.signing_key or "none (the models are not signed)",
        "publisher-keys": ", ".join(display_path(p, root) for p in options.publisher_keys)
        or ("the signing key's own" if options.signing_key else "none"),
    }  # fmt: skip
    for name, value in settings.items():
        print(f"  {name:<22} {value}{'' if name in written else ' (default)'}")
    if plan.datakey is not None and options.data_key is not None:
        holders = ", ".join(plan.datakey.uris())
        print(f"key: unwrapped from data-key {display_path(options.data_key, root)}, key id {plan.datakey.key_id} "
              f"(holders: {holders})")  # fmt: skip
    else:
        print(f"key: from {source}, key id {key_id(plan.key).hex()}")
    if warning := sdist_unchecked_warning(root):
        print(f"warning: {warning}", file=sys.stderr)
    model_files = [path for spec in options.models for path in plaintext_paths(spec)]
    uv = uv_in_use(root, os.environ)
    if uv and (hint := uv_cache_keys_hint(root, model_files)):
        print(
            f"editable installs with uv (in use here: {uv}): uv caches them and would keep running the old "
            f"encrypted snapshot after the models change; add to pyproject.toml:\n{hint}"
        )
    return EXIT_OK


def _print_models(plan: Plan, root: Path) -> None:
    """One aligned line per model: name, kind, source (and how many files a folder has)."""
    from ..config import display_path

    specs = plan.options.models
    name_width = max(16, *(len(spec.name) for spec in specs))
    kind_width = max(11, *(len(plan.models[spec.name].kind) for spec in specs))
    for spec in specs:
        model = plan.models[spec.name]
        files = f" ({len(model.files)} files)" if model.files else ""
        print(f"  {spec.name:<{name_width}} {model.kind:<{kind_width}} {display_path(spec.source, root)}{files}")


def uv_in_use(root: Path, environ: Mapping[str, str]) -> str | None:
    """Why uv looks like this project's installer, or None; only then does `check` give uv's cache-keys advice.

    Any one of: uv started this process (`uv run` sets $UV, the path of the uv binary, for everything it runs);
    a uv.lock in the project or in a folder above it that holds a pyproject.toml (a uv workspace's root); a
    [tool.uv] table in the project's pyproject.toml. pip users see no advice: `pip install -e .` builds anew.
    """
    from hatchling.metadata.core import ProjectMetadata

    if environ.get("UV"):
        return "$UV is set: uv runs this command"
    for folder in (root, *root.parents):
        if (folder / "uv.lock").is_file() and (folder / "pyproject.toml").is_file():
            return f"{folder / 'uv.lock'}"
    if isinstance(ProjectMetadata(str(root), None).config.get("tool", {}).get("uv"), dict):
        return "pyproject.toml has a [tool.uv] table"
    return None


@contextlib.contextmanager
def _hatchling_refusals(pyproject: Path) -> Iterator[None]:
    """hatchling's own refusals of the project (`Missing required field `project.name``, `Field ... must be a
    table`) as one line naming the file, as the build would stop on them; any other error passes unchanged."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        innermost = exc.__traceback__
        while innermost is not None and innermost.tb_next is not None:
            innermost = innermost.tb_next
        if innermost is None or "hatchling" not in Path(innermost.tb_frame.f_code.co_filename).parts:
            raise
        text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise CheckFailed(f"{pyproject}: {text}") from None


def _key_environment(table: dict[str, Any], args: argparse.Namespace) -> tuple[dict[str, str], str]:
    """The environment the checks read the key from (with --key-file/--key-env applied), and where it comes from.

    `--key-env NAME` checks as if the table said `key-env = "NAME"`; `--key-file PATH` gives the key as the
    build would get it from `$<key-env>_FILE`.
    """
    from ..config import DEFAULT_KEY_ENV

    if args.key_env is not None:
        table["key-env"] = args.key_env
    name = str(table.get("key-env", DEFAULT_KEY_ENV))
    environ = dict(os.environ)
    if args.key_file is not None:
        environ.pop(name, None)
        environ[f"{name}_FILE"] = args.key_file
        return environ, f"--key-file {args.key_file}"
    if name in environ:
        return environ, f"${name}"
    return environ, f"${name}_FILE ({environ.get(f'{name}_FILE', 'not set')})"



def register(make: VerbFactory) -> None:
    sub = make(
        "check", cmd_check, "validate a product's ovcrypt hook table exactly as the build would, without building"
    )
    sub.add_argument("project_dir", nargs="?", default=".", metavar="PROJECT_DIR", help="the product (default: .)")
    sub.add_argument("--key-file", metavar="PATH", help="file holding the key the build would use")
    sub.add_argument("--key-env", metavar="NAME", help="check as if the table said key-env = NAME")
    sub = make("keygen", cmd_keygen, "print a new 256-bit key (64 hex characters), or write it with mode 0600")
    sub.add_argument("--out", metavar="FILE", help="write the key to FILE (mode 0600) instead of printing it")
    sub.add_argument(
        "--signing", action="store_true", help="make a publisher key pair instead: FILE and FILE.pub (ECDSA P-256)"
    )
