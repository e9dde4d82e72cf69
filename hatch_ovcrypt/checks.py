"""Everything checked before a build encrypts anything: files, IR, keys, package, and plaintext leaks.

Used by the build hook and by `hatch-ovcrypt check`, so both judge a project the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
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
    key: bytes = field(repr=False)  # never in a repr, a log line or a traceback's rendering
    models: dict[str, ModelPlan] = field(default_factory=dict)
    extensions: tuple[str, ...] = ()  # modules the runtime imports before reading an IR
    new_package: bool = False  # the wheel has no such package: the hook creates it (single-module projects)


def is_from_sdist(root: Path) -> bool:
    """An unpacked sdist has PKG-INFO at its root; a source checkout does not."""
    return (root / "PKG-INFO").is_file()


def check_project(
    raw: Mapping[str, Any], root: Path, builder: BuilderInterface[Any, Any], environ: Mapping[str, str] | None = None,
    build_data: Mapping[str, Any] | None = None,
) -> tuple[Plan | None, list[Problem]]:  # fmt: skip
    """Run every check; return the plan, or None and every problem found.

    `build_data` is the build's, as the build hooks that ran before this one left it (None outside a build).
    """
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
    problems += check_plaintext_in_wheel(options, builder, root, build_data)
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


def check_plaintext_in_wheel(
    options: Options, builder: BuilderInterface[Any, Any], root: Path, build_data: Mapping[str, Any] | None = None
) -> list[Problem]:
    """A problem for every plaintext model file that any way of hatchling's would put into the wheel, naming
    the entry that does it: selected files (packages, include, only-include, artifacts), the target's
    or global force-include, shared-data, shared-scripts, extra-metadata, sbom-files, license-files, and
    what build hooks put into `build_data` (those that ran before this one, during the build)."""
    return [
        Problem(spec.path, f"file {_rel(path, root)} would be packed into the wheel as {dist} {route}")
        for spec, path, dist, route in _wheel_leaks(options, builder, root, build_data or {})
    ]


def _wheel_leaks(
    options: Options, builder: BuilderInterface[Any, Any], root: Path, build_data: Mapping[str, Any]
) -> list[tuple[ModelSpec, Path, str, str]]:
    models = _model_files(options)
    if not models:
        return []
    leaks: dict[tuple[Path, str], tuple[ModelSpec, Path, str, str]] = {}
    for path, dist, route in wheel_inclusions(builder, root, build_data):
        spec = models.get(path)
        if spec is not None:
            leaks.setdefault((path, dist), (spec, path, dist, route))
    return list(leaks.values())


_BY_HOOK = "that a build hook put into build_data[{key!r}]: change or remove that hook"
_REMOVE = "remove it, or point it at a folder without models"


def _q(text: str) -> str:
    """A TOML key or string as it is written in pyproject.toml."""
    return json.dumps(text)


def wheel_inclusions(
    builder: BuilderInterface[Any, Any], root: Path, build_data: Mapping[str, Any]
) -> Iterator[tuple[Path, str, str]]:
    """(resolved source file, path in the wheel, how it gets there and how to stop it) for every file that
    the wheel build would pack, each way of hatchling's (1.24-1.33) computed with hatchling's own code."""
    from hatchling.builders.utils import normalize_inclusion_map

    config = builder.config
    target = f"tool.hatch.build.targets.{config.plugin_name}"
    hook_artifacts = [p for p in build_data.get("artifacts", ()) if isinstance(p, str)]
    hook_forced = dict(build_data.get("force_include", {}))

    # Selected files, as the build selects them: with the hooks' artifacts, and minus what is force-included.
    with config.set_build_data({"artifacts": hook_artifacts, "force_include": hook_forced}):
        for f in builder.recurse_selected_project_files():
            path = Path(f.path).resolve()
            yield path, f.distribution_path, _selection_route(builder, root, path, f.relative_path, hook_artifacts)

    def explicit(
        inclusion: Mapping[str, str], prefix: str, route: str, *, forced: bool
    ) -> Iterator[tuple[Path, str, str]]:
        try:
            normalized = normalize_inclusion_map(dict(inclusion), str(root))
            recurse = builder.recurse_forced_files if forced else builder.recurse_explicit_files
            files = list(recurse(normalized))
        except (OSError, TypeError, ValueError):  # a missing source: the build itself reports it
            return
        for f in files:
            yield Path(f.path).resolve(), prefix + f.distribution_path, route

    # Force-included files and folders (a folder counts for every file under it).
    own = "force-include" in config.target_config
    location = f"{target}.force-include" if own else "tool.hatch.build.force-include"
    for key, value in (config.target_config if own else config.build_config).get("force-include", {}).items():
        route = f"through the entry {_q(key)} of `{location}`: " + _REMOVE
        yield from explicit({key: value}, "", route, forced=True)
    for key, value in hook_forced.items():
        route = f"through the force-include entry {_q(key)} " + _BY_HOOK.format(key="force_include")
        yield from explicit({key: value}, "", route, forced=True)

    # The wheel's .data and .dist-info folders.
    try:
        project_id = builder.project_id
    except Exception:  # metadata that cannot be read: the build itself reports it
        project_id = "<name>-<version>"
    folders = {
        "shared-data": f"{project_id}.data/data/",
        "shared-scripts": f"{project_id}.data/scripts/",
        "extra-metadata": f"{project_id}.dist-info/extra_metadata/",
    }
    for option, prefix in folders.items():
        table = config.target_config.get(option, {})
        for key, value in (table if isinstance(table, dict) else {}).items():
            route = f"through the entry {_q(key)} of `{target}.{option}`: " + _REMOVE
            yield from explicit({key: value}, prefix, route, forced=False)
        hook_key = option.replace("-", "_")
        for key, value in dict(build_data.get(hook_key, {})).items():
            route = f"through the {option} entry {_q(key)} " + _BY_HOOK.format(key=hook_key)
            yield from explicit({key: value}, prefix, route, forced=False)
    sboms = config.target_config.get("sbom-files", [])
    hook_sboms = build_data.get("sbom_files", ())
    for item, route in [
        *((s, f"through the entry {_q(s)} of `{target}.sbom-files`: remove it") for s in sboms if isinstance(s, str)),
        *((s, f"through the sbom_files entry {_q(s)} " + _BY_HOOK.format(key="sbom_files")) for s in hook_sboms),
    ]:
        yield (root / item).resolve(), f"{project_id}.dist-info/sboms/{Path(item).name}", route
    try:
        licenses = list(builder.metadata.core.license_files)
    except Exception:
        licenses = []
    for item in licenses:
        route = "as a license file (`project.license-files`): remove it from that list"
        yield (root / item).resolve(), f"{project_id}.dist-info/licenses/{item}", route


def _selection_route(
    builder: BuilderInterface[Any, Any], root: Path, path: Path, relative: str, hook_artifacts: list[str]
) -> str:
    """How a selected file came to be selected, and what stops it."""
    import pathspec

    config = builder.config
    target = f"tool.hatch.build.targets.{config.plugin_name}"
    rel = relative.replace(os.sep, "/")

    def matching(patterns: Iterable[object]) -> list[str]:
        return [p for p in patterns if isinstance(p, str) and pathspec.GitIgnoreSpec.from_lines([p]).match_file(rel)]

    if found := matching(hook_artifacts):
        return f"through the artifacts pattern {_q(found[0])} " + _BY_HOOK.format(key="artifacts")
    if config.path_is_artifact(rel):
        own = "artifacts" in config.target_config
        location = f"{target}.artifacts" if own else "tool.hatch.build.artifacts"
        patterns = (config.target_config if own else config.build_config).get("artifacts", [])
        found = matching(patterns)
        entry = f"the pattern {_q(found[0])} of `{location}`" if found else f"`{location}`"
        return f"through {entry} (artifacts are packed even when excluded): remove or narrow it"
    fix = f'add `exclude = ["/{_rel(path.parent, root)}"]` under [{target}], or move the models out of '
    for option in ("only-include", "packages"):  # what selects files, in hatchling's order
        own = option in config.target_config
        raw = (config.target_config if own else config.build_config).get(option)
        if isinstance(raw, list) and raw:
            location = f"{target}.{option}" if own else f"tool.hatch.build.{option}"
            entries = [e for e in raw if isinstance(e, str) and path.is_relative_to((root / e).resolve())]
            entry = f"the entry {_q(entries[0])} of `{location}`" if entries else f"`{location}`"
            return f"through {entry}: {fix}that folder"
    return f"(selected by the include rules of [{target}]): {fix}the package folder"


def check_built_wheel(
    options: Options, builder: BuilderInterface[Any, Any], root: Path, build_data: Mapping[str, Any], wheel: Path
) -> list[Problem]:
    """After the build: the ways of check_plaintext_in_wheel with the final build data (hooks that ran after
    this one included), then every member of the built wheel compared with every plaintext model file of
    its size, which also finds a copy that no configuration names."""
    import zipfile

    leaks = _wheel_leaks(options, builder, root, build_data)
    problems = [
        Problem(spec.path, f"file {_rel(path, root)} would be packed into the wheel as {dist} {route}")
        for spec, path, dist, route in leaks
    ]
    named = {dist for _, _, dist, _ in leaks}
    by_size: dict[int, list[tuple[Path, ModelSpec]]] = {}
    for path, spec in _model_files(options).items():
        size = path.stat().st_size
        if size:  # an empty file is equal to every empty file
            by_size.setdefault(size, []).append((path, spec))
    digests: dict[Path, bytes] = {}
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.infolist():
            candidates = by_size.get(member.file_size, [])
            if not candidates or member.filename in named:
                continue
            digest = hashlib.sha256()
            with zf.open(member) as f:
                while block := f.read(1 << 20):
                    digest.update(block)
            for path, spec in candidates:
                if path not in digests:
                    digests[path] = _sha256(path)
                if digests[path] == digest.digest():
                    problems.append(Problem(spec.path, (
                        f"file {_rel(path, root)} is in the built wheel as {member.filename}, put there in a way that "
                        "hatch-ovcrypt cannot name (a build hook?): the wheel was removed; find what adds that file"
                    )))  # fmt: skip
    return problems


def _sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.digest()


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
