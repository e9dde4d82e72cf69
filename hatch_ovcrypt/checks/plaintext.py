"""Plaintext that must not ship: every way a file reaches the wheel, and what the sdist would carry.

The checks name the entry that would pack a plaintext model file (a TOML path and key, or a build hook),
so the message says exactly what to remove. Used by `checks` before a build and by the hook after it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ModelSpec, Options, Problem, display_path
from ..sources.models import plaintext_paths

if TYPE_CHECKING:
    from hatchling.builders.plugin.interface import BuilderInterface

SDIST_FIX = (
    'add `exclude = ["/{dir}"]` under [tool.hatch.build.targets.sdist] so the sdist leaves them out, '
    "or set `allow-plaintext-sdist = true` in [{location}] to ship them on purpose"
)


SDIST_HOOK_ADVICE = (
    "configure the hook as [tool.hatch.build.hooks.ovcrypt] (for every target) instead of "
    "[tool.hatch.build.targets.wheel.hooks.ovcrypt], so the sdist build refuses plaintext models before it writes"
)


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
        Problem(spec.path, f"file {display_path(path, root)} would be packed into the wheel as {dist} {route}")
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
    the wheel build would pack, each way of hatchling's (1.26.3-1.33) computed with hatchling's own code."""
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
    fix = f'add `exclude = ["/{display_path(path.parent, root)}"]` under [{target}], or move the models out of '
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
        Problem(spec.path, f"file {display_path(path, root)} would be packed into the wheel as {dist} {route}")
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
                        f"file {display_path(path, root)} is in the built wheel as {member.filename}, put there in a "
                        "way that "
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
            leaks.setdefault((spec.path, display_path(folder.resolve(), root.resolve())), []).append(path)
    return [
        Problem(toml, f"{_count(paths)} in {folder}/ would be packed into the sdist: "
                + SDIST_FIX.format(dir=folder, location=options.location))
        for (toml, folder), paths in leaks.items()
    ]  # fmt: skip


def check_plaintext_from_sdist(options: Options, root: Path) -> list[Problem]:
    """Building from an unpacked sdist (`root` holds PKG-INFO): every plaintext model file here came out of that
    sdist, so the sdist leaked it. One problem per model and folder, saying how to stop the leak."""
    leaks: dict[tuple[str, str], list[Path]] = {}
    for path, spec in _model_files(options).items():
        folder = spec.source if spec.source.is_dir() else path.parent
        leaks.setdefault((spec.path, display_path(folder.resolve(), root.resolve())), []).append(path)
    # With the table for every target, the sdist build itself refuses: say so where it was not.
    advice = f"; {SDIST_HOOK_ADVICE}" if options.location.startswith("tool.hatch.build.targets.") else ""
    rebuild = "; build the wheel from the source tree (`python -m build --wheel`, `uv build --wheel` or `pip wheel .`)"
    return [
        Problem(toml, f"{_count(paths)} in {folder}/ came out of the sdist this wheel is built from, so that sdist "
                "leaked the plaintext models: delete it, then "
                + SDIST_FIX.format(dir=folder, location=options.location) + advice + rebuild)
        for (toml, folder), paths in leaks.items()
    ]  # fmt: skip


def remove_plaintext_sdist(options: Options, root: Path, directory: Path) -> Path | None:
    """After a refused wheel build: remove this project's sdist from the output folder if it holds any plaintext
    model file (same path and bytes), so that no plaintext artifact is left ready for upload. `hatch build`,
    `python -m build` and `uv build` write the sdist there just before the wheel when the sdist build does not
    run this hook. Returns the removed sdist, or None."""
    import tarfile

    from hatchling.builders.sdist import SdistBuilder

    project_id = SdistBuilder(str(root)).artifact_project_id
    sdist = directory / f"{project_id}.tar.gz"
    wanted = {f"{project_id}/{display_path(path, root.resolve())}": path for path in _model_files(options)}
    if not wanted or not sdist.is_file():
        return None
    try:
        with tarfile.open(sdist) as tar:
            for member in tar:
                path = wanted.get(member.name)
                if path is None or not member.isfile() or member.size != path.stat().st_size:
                    continue
                f = tar.extractfile(member)
                digest = hashlib.sha256()
                while f is not None and (block := f.read(1 << 20)):
                    digest.update(block)
                if digest.digest() == _sha256(path):
                    break
            else:
                return None
    except (OSError, tarfile.TarError):  # not an sdist we can read: leave it
        return None
    sdist.unlink(missing_ok=True)
    return sdist


def sdist_runs_the_hook(root: Path) -> bool:
    """Whether hatchling runs this hook when it builds the sdist (a global or sdist-target table, enabled)."""
    from hatchling.builders.sdist import SdistBuilder

    from ..config import HOOK_NAME

    return HOOK_NAME in SdistBuilder(str(root)).config.hook_config


def sdist_unchecked_warning(root: Path) -> str | None:
    """A one-line warning when the sdist build does not run the hook, so nothing stops a plaintext sdist."""
    if sdist_runs_the_hook(root):
        return None
    return (
        "the sdist build does not run hook `ovcrypt` (it is configured for the wheel target only), so "
        "`python -m build --sdist` and `hatch build` write the sdist without any check; " + SDIST_HOOK_ADVICE
    )


def _count(paths: list[Path]) -> str:
    return f"file {paths[0].name}" if len(paths) == 1 else f"{len(paths)} files"
