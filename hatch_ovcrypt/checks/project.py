"""Everything checked before a build encrypts anything: files, IR, keys, package, and plaintext leaks.

Used by the build hook and by `hatch-ovcrypt check`, so both judge a project the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ovcrypt_runtime._errors import OvcryptError
from ovcrypt_runtime._format.spec import forget_keys
from ovcrypt_runtime._keys.sources import keys_from_environment

from ..config import HOOK_NAME, Options, Problem, hook_location, parse_options
from .dependencies import check_runtime_dependencies
from .models import ModelPlan, check_model, load_extensions, runtime_extensions
from .plaintext import check_plaintext_from_sdist, check_plaintext_in_sdist, check_plaintext_in_wheel

if TYPE_CHECKING:
    from hatchling.builders.plugin.interface import BuilderInterface

    from ovcrypt_runtime._keys.holders.datakey import DataKey

@dataclass(frozen=True)
class Plan:
    """A project that passed every check: what the build will do."""

    options: Options
    package: str
    key: bytes = field(repr=False)  # never in a repr, a log line or a traceback's rendering
    models: dict[str, ModelPlan] = field(default_factory=dict)
    extensions: tuple[str, ...] = ()  # modules the runtime imports before reading an IR
    new_package: bool = False  # the wheel has no such package: the hook creates it (single-module projects)
    datakey: DataKey | None = None  # `data-key`: its holders go into the manifest (the key was unwrapped from it)


def is_from_sdist(root: Path) -> bool:
    """An unpacked sdist has PKG-INFO at its root; a source checkout does not."""
    return (root / "PKG-INFO").is_file()


@forget_keys  # it holds the build's key, and the environment that holds it
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
    key, datakey = _build_key(options, environ, problems)
    problems += check_signing(options, environ, location)
    # Files the wheel selects, and the user's force-include (hatchling applies no `exclude` to those).
    selected = {Path(f.path).resolve(): f.distribution_path for f in builder.recurse_selected_project_files()}
    forced = {Path(f.path).resolve(): f.distribution_path for f in builder.recurse_forced_files(
        builder.config.get_force_include())}  # fmt: skip
    package, new_package = _resolve_package(options, [*selected.values(), *forced.values()], problems)
    problems += check_plaintext_in_wheel(options, builder, root, build_data)
    problems += check_runtime_dependencies(
        builder.metadata.core.dependencies, builder.metadata.dynamic, needs_genai=needs_genai(plans), location=location
    )
    if not options.allow_plaintext_sdist:
        # From a source tree: would the sdist carry them? From an unpacked sdist: any model file here leaked.
        problems += check_plaintext_from_sdist(options, root) if from_sdist else check_plaintext_in_sdist(options, root)
    if problems or package is None or key is None:
        return None, problems
    return plan_of(options, package, key, plans, new_package, datakey), problems


def check_signing(options: Options, environ: Mapping[str, str], location: str) -> list[Problem]:
    """The signing key can be used and is among the pinned publisher keys : reached once, here."""
    if options.signing_key is None:
        return []
    from ovcrypt_runtime._errors import SignatureError

    from ..signing import publisher_pems, signer_for

    try:
        publisher_pems(signer_for(options.signing_key, environ), options.publisher_keys)
    except SignatureError as exc:
        return [Problem(f"{location}.signing-key", str(exc).removeprefix("signing-key "))]
    return []


def needs_genai(plans: Mapping[str, ModelPlan]) -> bool:
    """Whether the runtime builds GenAI pipelines: then the product needs openvino-genai and openvino-tokenizers."""
    return any(plan.kind in ("llm", "vlm", "text2image") for plan in plans.values())


@forget_keys  # the environment holds the key
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
    options: Options, package: str, key: bytes, plans: dict[str, ModelPlan], new_package: bool = False,
    datakey: DataKey | None = None,
) -> Plan:  # fmt: skip
    """The build's plan once every check passed."""
    return Plan(options, package, key, plans, runtime_extensions(options.extensions, plans), new_package, datakey)


@forget_keys
def _build_key(
    options: Options, environ: Mapping[str, str], problems: list[Problem]
) -> tuple[bytes | None, DataKey | None]:
    """With `data-key`: the data key, unwrapped through the first of its holders that works here (never re-wrapped,
    so builds stay byte-identical). Without: the first key of $key-env (a list means: rotating, first is new)."""
    if options.data_key is not None:
        return _unwrap_data_key(options, options.data_key, problems)
    return _raw_build_key(options, environ, problems), None


@forget_keys
def _unwrap_data_key(options: Options, path: Path, problems: list[Problem]) -> tuple[bytes | None, DataKey | None]:
    from ovcrypt_runtime._keys.holders import unwrap_first
    from ovcrypt_runtime._keys.holders.datakey import read_datakey

    where = f"names {path}:"
    try:
        datakey = read_datakey(path, f"wrapped data key file {path}")
        key = unwrap_first(datakey.holders, datakey.context(), options.key_env, "the build")
    except OvcryptError as exc:
        problems.append(Problem(f"{options.location}.data-key", f"{where} {exc}"))
        return None, None
    return key, datakey


def _raw_build_key(options: Options, environ: Mapping[str, str], problems: list[Problem]) -> bytes | None:
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


def hook_table(builder: BuilderInterface[Any, Any]) -> dict[str, Any] | None:
    """The hook table this builder would give the hook, or None when the hook is not configured."""
    table = builder.config.hook_config.get(HOOK_NAME)
    return dict(table) if table is not None else None
