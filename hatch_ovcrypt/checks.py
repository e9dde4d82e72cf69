"""Everything checked before a build encrypts anything: files, IR, keys, package, and plaintext leaks.

Used by the build hook and by `hatch-ovcrypt check`, so both judge a project the same way.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import HOOK_NAME, ModelSpec, Options, Problem, hook_location, parse_options
from .model_checks import ModelPlan, check_model, load_extensions, runtime_extensions
from .requirements import GENAI_PACKAGES, RUNTIME_REQUIREMENTS, genai_requirements
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
    new_package: bool = False  # the wheel has no such package: the hook creates it (single-module projects)


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
    # Files the wheel selects, and the user's force-include (hatchling applies no `exclude` to those).
    selected = {Path(f.path).resolve(): f.distribution_path for f in builder.recurse_selected_project_files()}
    forced = {Path(f.path).resolve(): f.distribution_path for f in builder.recurse_forced_files(
        builder.config.get_force_include())}  # fmt: skip
    package, new_package = _resolve_package(options, [*selected.values(), *forced.values()], problems)
    problems += _check_plaintext_in_wheel(options, selected, forced, root)
    problems += check_runtime_dependencies(
        builder.metadata.core.dependencies, builder.metadata.dynamic, needs_genai=needs_genai(plans), location=location
    )
    if not from_sdist and not options.allow_plaintext_sdist:
        problems += check_plaintext_in_sdist(options, root)
    if problems or package is None or key is None:
        return None, problems
    return plan_of(options, package, key, plans, new_package), problems


def needs_genai(plans: Mapping[str, ModelPlan]) -> bool:
    """Whether the runtime builds GenAI pipelines: then the product needs openvino-genai and openvino-tokenizers."""
    return any(plan.kind in ("llm", "vlm", "text2image") for plan in plans.values())


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


def plan_of(
    options: Options, package: str, key: bytes, plans: dict[str, ModelPlan], new_package: bool = False
) -> Plan:
    """The build's plan once every check passed."""
    return Plan(options, package, key, plans, runtime_extensions(options.extensions, plans), new_package)


def check_runtime_dependencies(
    metadata_dependencies: list[str], dynamic: list[str], needs_genai: bool, location: str
) -> list[Problem]:
    """The product's static [project] dependencies must name every requirement of the runtime the hook adds.

    The hook also adds them to the wheel's Requires-Dist, but installers that trust static pyproject metadata
    (uv, as PEP 621 allows) resolve a source tree from [project].dependencies alone, and would install the product
    without them. With `dependencies` in [project].dynamic nobody trusts the static list, and the hook's are used.
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    if "dependencies" in dynamic:
        return []
    declared = set()
    for text in metadata_dependencies:
        try:
            declared.add(canonicalize_name(Requirement(text).name))
        except InvalidRequirement:  # hatchling reports it itself
            continue
    needed = list(RUNTIME_REQUIREMENTS)
    openvino = _installed_version("openvino")
    if needs_genai:
        needed += genai_requirements(openvino or "0")
    missing = [r for r in needed if canonicalize_name(Requirement(r).name) not in declared]
    if not missing:
        return []
    names = ", ".join(Requirement(r).name for r in missing)
    line = "dependencies = [" + ", ".join(json.dumps(r) for r in [*metadata_dependencies, *missing]) + "]"
    message = (
        f"does not list {names}, which the runtime that `{location}` puts into the wheel needs at run time. "
        "Installers that trust the static [project] metadata (uv, as PEP 621 allows) would install the product "
        f"without {'it' if len(missing) == 1 else 'them'}. Write `{line}` under [project], "
        'or list "dependencies" in [project] `dynamic` to take them from the build'
    )
    if any(Requirement(r).name in GENAI_PACKAGES for r in missing):
        message += (
            ". openvino-genai and openvino-tokenizers are released with openvino: each needs the openvino of its "
            f"own YYYY.R release, so these name the release of the openvino that checks the models here ({openvino})"
        )
    return [Problem("project.dependencies", message)]


def _installed_version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def uv_cache_keys_hint(root: Path, model_paths: list[Path]) -> str | None:
    """The TOML that makes uv rebuild the project when a model file changes, or None when pyproject has it.

    uv caches a project's editable build and rebuilds it only when a cache key changes (by default
    pyproject.toml, setup.py and setup.cfg), so `uv run` and `uv sync` would keep an old encrypted snapshot
    of changed models. `[tool.uv] cache-keys` replaces those defaults, so the hint keeps pyproject.toml.
    """
    from hatchling.metadata.core import ProjectMetadata

    uv = ProjectMetadata(str(root), None).config.get("tool", {}).get("uv")
    uv = uv if isinstance(uv, dict) else None
    existing = uv.get("cache-keys") if uv is not None else None
    entries: list[Any] = list(existing) if isinstance(existing, list) else []
    globs = [e if isinstance(e, str) else e.get("file") for e in entries if isinstance(e, (str, dict))]
    patterns = [_glob_regex(g) for g in globs if isinstance(g, str)]
    uncovered = []
    for path in model_paths:
        rel = os.path.relpath(Path(root, path).resolve(), root.resolve()).replace(os.sep, "/")
        if not rel.startswith("../") and not any(p.match(rel) for p in patterns):
            uncovered.append(rel)
    if not uncovered:
        return None
    if not isinstance(existing, list):
        entries = [{"file": "pyproject.toml"}]
    dirs = sorted({rel.rpartition("/")[0] for rel in uncovered if "/" in rel})
    tops = [d for d in dirs if not any(d.startswith(f"{other}/") for other in dirs)]
    new = [f"{d}/**" for d in tops] + [rel for rel in dict.fromkeys(uncovered) if "/" not in rel]
    entries += [{"file": glob} for glob in new]
    line = "cache-keys = [" + ", ".join(_toml_inline(e) for e in entries) + "]"
    if uv is None:
        return f"[tool.uv]\n{line}"
    return f"{line}  # {'in' if existing is None else 'replaces cache-keys in'} the existing [tool.uv]"


def _toml_inline(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_inline(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _glob_regex(glob: str) -> re.Pattern[str]:
    """A glob as uv reads cache-keys (the glob crate): `*` and `?` stay within a folder, `**` spans folders."""
    parts = glob.strip("/").split("/")
    regex = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            regex += ".*" if last else "(?:.*/)?"
            continue
        j = 0
        while j < len(part):
            ch = part[j]
            close = part.find("]", j + 2)
            if ch == "*":
                regex += "[^/]*"
            elif ch == "?":
                regex += "[^/]"
            elif ch == "[" and close != -1:
                body = part[j + 1 : close]
                regex += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
                j = close
            else:
                regex += re.escape(ch)
            j += 1
        regex += "" if last else "/"
    return re.compile(regex + r"\Z")


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


@dataclass(frozen=True)
class WheelContents:
    """What a wheel would import: its packages (regular and namespace) and its top-level modules."""

    regular: frozenset[str]  # dotted names of folders with an __init__.py
    namespace: frozenset[str]  # dotted names of folders above Python code without an __init__.py (PEP 420)
    modules: frozenset[str]  # top-level single-file modules (`acme_vision.py`)

    @classmethod
    def of(cls, distribution_paths: Iterable[str]) -> WheelContents:
        regular: set[str] = set()
        code_dirs: set[tuple[str, ...]] = set()
        modules: set[str] = set()
        for path in distribution_paths:
            parts = tuple(path.replace(os.sep, "/").split("/"))
            if not parts[-1].endswith(".py") or not all(p.isidentifier() for p in parts[:-1]):
                continue
            if len(parts) == 1:
                modules.add(parts[0][:-3])
                continue
            code_dirs.add(parts[:-1])
            if parts[-1] == "__init__.py":
                regular.add(".".join(parts[:-1]))
        namespace = {".".join(d[:i]) for d in code_dirs for i in range(1, len(d) + 1)} - regular
        return cls(frozenset(regular), frozenset(namespace), frozenset(modules))

    @property
    def roots(self) -> list[str]:
        """The outermost regular packages: top-level ones, and those directly inside a namespace package."""
        return sorted(p for p in self.regular if p.rpartition(".")[0] not in self.regular)


def _resolve_package(
    options: Options, distribution_paths: Iterable[str], problems: list[Problem]
) -> tuple[str | None, bool]:
    """The package that gets `_ovcrypt`, and whether the hook creates it (a single-module project's runtime)."""
    wheel = WheelContents.of(distribution_paths)
    packages = sorted(wheel.regular | wheel.namespace)
    listed = ", ".join(packages) or "no packages"
    modules = ", ".join(f"{m}.py" for m in sorted(wheel.modules))
    location = f"{options.location}.package"
    if options.package is not None:
        if options.package in packages:
            return options.package, False
        top = options.package.split(".")[0]
        if not packages and "." not in options.package and top not in wheel.modules:
            return options.package, True  # a new top-level (namespace) package beside the project's modules
        if top in wheel.modules:
            message = f"names {options.package!r}, but {top}.py is a module of the wheel; choose a new name"
        else:
            message = f"names {options.package!r}, which the wheel does not contain (it has: {listed})"
    elif len(wheel.roots) == 1:
        return wheel.roots[0], False
    elif wheel.roots:
        message = (
            f"is needed: the wheel has several packages ({', '.join(wheel.roots)}); "
            "say which one gets the `_ovcrypt` runtime"
        )
    elif wheel.modules:
        name = f"{sorted(wheel.modules)[0]}_models"
        message = (
            f"is needed: the wheel has no package, only {modules}; name a new package for the runtime, "
            f'such as `package = "{name}"` (then `from {name}._ovcrypt import compile_model`)'
        )
    else:
        message = "is needed: the wheel has no package and no module; check the wheel target's file selection"
    problems.append(Problem(location, message))
    return None, False


def _model_files(options: Options) -> dict[Path, ModelSpec]:
    return {path.resolve(): spec for spec in options.models for path in plaintext_paths(spec)}


def _check_plaintext_in_wheel(
    options: Options, selected: Mapping[Path, str], forced: Mapping[Path, str], root: Path
) -> list[Problem]:
    problems = []
    for path, spec in _model_files(options).items():
        if path in forced:
            fix = ("force-include maps it there, and `exclude` does not apply to forced files: force-include only "
                   "the code, or move the models out of the force-included folder")  # fmt: skip
        elif path in selected:
            fix = (f'add `exclude = ["/{_rel(path.parent, root)}"]` under [tool.hatch.build.targets.wheel], '
                   "or move the models out of the package folder")  # fmt: skip
        else:
            continue
        where = forced.get(path) or selected[path]
        problems.append(Problem(spec.path, f"file {_rel(path, root)} would be packed into the wheel as {where}: {fix}"))
    return problems


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
