"""Everything checked before a build encrypts anything: files, IR, keys, package, and plaintext leaks.

Used by the build hook and by `hatch-ovcrypt check`, so both judge a project the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import HOOK_NAME, ModelSpec, Options, Problem, hook_location, parse_options
from .model_checks import ModelPlan, check_model, load_extensions, runtime_extensions
from .runtime._errors import OvcryptError
from .runtime._keys import keys_from_environment
from .sources import plaintext_paths

if TYPE_CHECKING:
    from hatchling.builders.plugin.interface import BuilderInterface

SDIST_FIX = (
    'add `exclude = ["/{dir}"]` under [tool.hatch.build.targets.sdist] so the sdist leaves them out, '
    "or set `allow-plaintext-sdist = true` in [{location}] to ship them on purpose"
)


@dataclass(frozen=True)
class Plan:
    """A project that passed every check: what the build will do."""

    options: Options
    package: str
    key: bytes
    models: dict[str, ModelPlan]
    extensions: tuple[str, ...]  # modules the runtime imports before reading an IR


def is_from_sdist(root: Path) -> bool:
    """An unpacked sdist has PKG-INFO at its root; a source checkout does not."""
    return (root / "PKG-INFO").is_file()


def check_project(
    raw: Mapping[str, Any], root: Path, builder: BuilderInterface[Any, Any], environ: Mapping[str, str] | None = None
) -> tuple[Plan | None, list[Problem]]:
    """Run every check; return the plan, or None and every problem found."""
    environ = os.environ if environ is None else environ
    location = hook_location(builder.config.target_config, builder.PLUGIN_NAME)
    options, problems = parse_options(raw, root, location)
    from_sdist = is_from_sdist(root)
    plans, found = check_models(options, root, environ, from_sdist)
    problems += found
    key = _build_key(options, environ, problems)
    selected = {Path(f.path).resolve(): f.distribution_path for f in builder.recurse_selected_project_files()}
    package = _resolve_package(options, selected.values(), problems)
    problems += _check_plaintext_in_wheel(options, selected, root)
    if not from_sdist and not options.allow_plaintext_sdist:
        problems += check_plaintext_in_sdist(options, root)
    if problems or package is None or key is None:
        return None, problems
    return plan_of(options, package, key, plans), problems


def check_models(
    options: Options, root: Path, environ: Mapping[str, str], from_sdist: bool = False
) -> tuple[dict[str, ModelPlan], list[Problem]]:
    """Load the extension modules, then check every model; return the plans of those that passed, and the problems."""
    problems = [Problem(f"{options.location}.extensions", why) for why in load_extensions(options.extensions)]
    plans: dict[str, ModelPlan] = {}
    for spec in options.models:
        plan, found = check_model(spec, root, environ, from_sdist, options.extensions)
        problems += found
        if plan is not None:
            plans[spec.name] = plan
    return plans, problems


def plan_of(options: Options, package: str, key: bytes, plans: dict[str, ModelPlan]) -> Plan:
    """The build's plan once every check passed."""
    return Plan(options, package, key, plans, runtime_extensions(options.extensions, plans))


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _build_key(options: Options, environ: Mapping[str, str], problems: list[Problem]) -> bytes | None:
    """The build encrypts under the first key of $key-env (a list there means: rotating, first is new)."""
    try:
        keys = list(keys_from_environment(options.key_env, environ))
    except OvcryptError as exc:
        problems.append(Problem(f"{options.location}.key-env", str(exc)))
        return None
    if not keys:
        problems.append(Problem(
            f"{options.location}.key-env",
            f"names {options.key_env}, which is not set (nor {options.key_env}_FILE): make a key with "
            f"`hatch-ovcrypt keygen` and give it to the build as a secret environment variable",
        ))  # fmt: skip
        return None
    return keys[0]


def _resolve_package(options: Options, distribution_paths: Iterable[str], problems: list[Problem]) -> str | None:
    packages = sorted(
        {
            p.split("/")[0]
            for p in (d.replace(os.sep, "/") for d in distribution_paths)
            if p.count("/") == 1 and p.endswith("/__init__.py")
        }
    )
    listed = ", ".join(packages) or "no packages"
    if options.package is not None:
        if options.package.split(".")[0] in packages:
            return options.package
        message = f"names {options.package!r}, which the wheel does not contain (it has: {listed})"
    elif len(packages) == 1:
        return packages[0]
    else:
        found = f"several top-level packages ({listed})" if packages else "no top-level package"
        message = f"is needed: the wheel has {found}; say which one gets the `_ovcrypt` runtime"
    problems.append(Problem(f"{options.location}.package", message))
    return None


def _model_files(options: Options) -> dict[Path, ModelSpec]:
    return {path.resolve(): spec for spec in options.models for path in plaintext_paths(spec)}


def _check_plaintext_in_wheel(options: Options, selected: Mapping[Path, str], root: Path) -> list[Problem]:
    leaks = [(spec, path) for path, spec in _model_files(options).items() if path in selected]
    return [
        Problem(spec.path, f"file {_rel(path, root)} would be packed into the wheel as {selected[path]}: "
                f'add `exclude = ["/{_rel(path.parent, root)}"]` under [tool.hatch.build.targets.wheel], '
                "or move the models out of the package folder")
        for spec, path in leaks
    ]  # fmt: skip


def check_plaintext_in_sdist(options: Options, root: Path) -> list[Problem]:
    """One problem per model and folder to exclude (not per file: an exported folder holds many)."""
    from hatchling.builders.sdist import SdistBuilder

    in_sdist = {Path(f.path).resolve() for f in SdistBuilder(str(root)).recurse_included_files()}
    leaks: dict[tuple[str, str], list[Path]] = {}
    for path, spec in _model_files(options).items():
        if path in in_sdist:
            folder = spec.source if spec.source.is_dir() else path.parent
            leaks.setdefault((spec.path, _rel(folder.resolve(), root.resolve())), []).append(path)
    return [
        Problem(toml, f"{_count(paths)} in {folder}/ would be packed into the sdist: "
                + SDIST_FIX.format(dir=folder, location=options.location))
        for (toml, folder), paths in leaks.items()
    ]  # fmt: skip


def _count(paths: list[Path]) -> str:
    return f"file {paths[0].name}" if len(paths) == 1 else f"{len(paths)} files"


def hook_table(builder: BuilderInterface[Any, Any]) -> dict[str, Any] | None:
    """The hook table this builder would give the hook, or None when the hook is not configured."""
    table = builder.config.hook_config.get(HOOK_NAME)
    return dict(table) if table is not None else None
