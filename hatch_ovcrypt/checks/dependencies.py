"""What the product must declare, and how installers see it: static `[project].dependencies` complete for
the runtime (uv trusts them), and the `[tool.uv] cache-keys` that make editable installs follow the models.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from ..config import Problem
from ..requirements import GENAI_PACKAGES, RUNTIME_REQUIREMENTS, genai_requirements


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
