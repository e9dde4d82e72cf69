"""The project's TOML files as hatchling reads them: a one-line error for one that does not parse, and the
hook tables written where hatchling never looks.

hatchling reads `[tool.hatch]` from pyproject.toml, and a `hatch.toml` beside it replaces its top-level keys.
It runs a build hook only for a table at `tool.hatch.build.hooks.<name>` or
`tool.hatch.build.targets.<target>.hooks.<name>`; a table anywhere else (`target.wheel`, `targets.wheels`,
`hooks.ovcrpyt`) is ignored without a word, and the wheel is built without its models. hatchling does not
even import this plugin then, so only `hatch-ovcrypt check` can say so.
"""

from __future__ import annotations

import difflib
import importlib
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import HOOK_NAME, Problem

PYPROJECT, HATCH_TOML = "pyproject.toml", "hatch.toml"
# What `[tool.hatch]` holds, spelt as in pyproject.toml; hatch.toml holds the same without the prefix.
_HATCH_PREFIX = ("tool", "hatch")
_AT = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)\s*$")
_CLOSE = 0.6  # difflib's default cutoff: `ovcrpyt`, `crypt` and `hatch-ovcrypt` are near `ovcrypt`, `custom` is not


class ProjectFileError(ValueError):
    """A project file that hatchling cannot read either; the message is one line: `file:line:column: what`."""


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document at `path`, parsed as hatchling parses it (tomllib, or tomli before Python 3.11).

    Raises ProjectFileError, one line naming the file, line and column, and what to do when the cause is known.
    """
    # tomli is hatchling's own dependency before Python 3.11; importlib keeps mypy from needing its stubs.
    toml = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProjectFileError(f"{path}: is not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    try:
        document: dict[str, Any] = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise ProjectFileError(_decode_error(path, text, exc)) from None
    return document


def _decode_error(path: Path, text: str, exc: ValueError) -> str:
    """`path:line:column: not valid TOML: reason`, and the fix when the reason is a multi-line inline table."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)  # Python 3.14 and tomli 2.1 have them
    if match := _AT.search(reason):
        reason = reason[: match.start()]
        if line is None and match.group(1):
            line, column = int(match.group(1)), int(match.group(2))
    if line is None or column is None:
        line, column = text.count("\n") + 1, len(text.rpartition("\n")[2]) + 1  # at end of document
    message = f"{path}:{line}:{column}: not valid TOML: {reason}"
    stop = sum(len(row) + 1 for row in text.split("\n")[: line - 1]) + column - 1  # lines as tomllib counts them
    opened = _open_inline_table(text, stop)
    if opened is not None and (opened < line or text[stop : stop + 1] in ("#", "\n", "\r")):
        message += (
            f"; the inline table `{{ ... }}` opened on line {opened} holds a comment or a line break, which "
            "TOML 1.0 does not allow inside one: write it on one line without comments, or as a [table] of its own"
        )
    return message


def _open_inline_table(text: str, stop: int) -> int | None:
    """The line of the inline table still open at offset `stop`, or None: a small scan that knows strings,
    comments and arrays, enough to explain an error, never to parse."""
    stack: list[tuple[str, int]] = []  # open brackets with the line each opened on
    number, i = 1, 0
    while i < min(stop, len(text)):
        ch = text[i]
        if ch == "\n":
            number += 1
        elif ch == "#":
            end = text.find("\n", i)
            i = (len(text) if end == -1 else end) - 1
        elif ch in "\"'":
            quote = ch * 3 if text.startswith(ch * 3, i) else ch
            end = i + len(quote)
            while end < len(text) and not text.startswith(quote, end) and (len(quote) == 3 or text[end] != "\n"):
                end += 2 if ch == '"' and text[end] == "\\" else 1
            number += text.count("\n", i, end)
            i = end + len(quote) - 1
        elif ch in "{[":
            stack.append((ch, number))
        elif ch in "}]" and stack:
            stack.pop()
        i += 1
    tables = [opened for bracket, opened in stack if bracket == "{"]
    return tables[0] if tables else None


@dataclass(frozen=True)
class ProjectFile:
    """One TOML file hatchling reads for `[tool.hatch]`: its path and document, and what prefixes its keys."""

    path: Path
    document: dict[str, Any]
    prefix: tuple[str, ...]  # () for pyproject.toml; ("tool", "hatch") for hatch.toml


def project_files(root: Path) -> list[ProjectFile]:
    """pyproject.toml and, when there is one, hatch.toml; ProjectFileError when either does not parse."""
    files = [ProjectFile(root / PYPROJECT, read_toml(root / PYPROJECT), ())]
    if (root / HATCH_TOML).is_file():
        files.append(ProjectFile(root / HATCH_TOML, read_toml(root / HATCH_TOML), _HATCH_PREFIX))
    return files


def misplaced_hook_tables(files: list[ProjectFile], targets: set[str]) -> list[Problem]:
    """A problem for each table that looks like this hook's but sits where hatchling never looks for it, saying
    which path was meant. `targets` are the names of the build targets hatchling knows (wheel, sdist, ...).

    A table is taken for this hook's when its name is near `ovcrypt` (`ovcrpyt`, `hatch-ovcrypt`) and it lies
    under [tool.hatch] on a path near a build hook's, or, anywhere else (`[tool.ovcrypt]`), when it has `models`.
    """
    problems = []
    for file in files:
        where = "" if file.path.name == PYPROJECT else f" (in {file.path.name})"
        for path, is_hook in _misplaced(file.document, (), file.prefix, targets):
            meant = ".".join(_meant_path(file.prefix + path, targets)[len(file.prefix) :])
            if is_hook:
                why = f"names build hook `{path[-1]}`{where}, which is not installed (builds stop on it)"
            else:
                why = f"is not a table hatchling reads{where}, so builds ignore it and ship no models"
            problems.append(Problem(".".join(path), f"{why}: did you mean [{meant}]?"))
    return problems + _shadowed_hook_tables(files)


def _shadowed_hook_tables(files: list[ProjectFile]) -> list[Problem]:
    """pyproject.toml's hook tables that hatch.toml hides: hatchling takes each top-level key of [tool.hatch]
    from hatch.toml when it has it, so a hatch.toml with [build] hides all of [tool.hatch.build]."""
    if len(files) < 2 or "build" not in files[1].document:
        return []
    build = _table_at(files[0].document, ("tool", "hatch", "build"))
    targets = _table_at(build, ("targets",))
    paths = [("hooks", HOOK_NAME)] + [("targets", name, "hooks", HOOK_NAME) for name in targets]
    problems = []
    for path in paths:
        if _table_at(build, path):
            problems.append(Problem(
                ".".join(("tool", "hatch", "build", *path)),
                f"is hidden by [build] in {HATCH_TOML}, which replaces all of pyproject.toml's [tool.hatch.build]: "
                f"move the table into {HATCH_TOML} as [{'.'.join(('build', *path))}]",
            ))  # fmt: skip
    return problems


def _table_at(table: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any]:
    """The table at `path` under `table`, or an empty one when any step is missing or not a table."""
    for key in path:
        value = table.get(key)
        if not isinstance(value, Mapping):
            return {}
        table = value
    return table


def known_targets() -> set[str]:
    """The build targets hatchling knows here: its own (wheel, sdist, binary, custom, ...) and plugins'."""
    from hatchling.plugin.manager import PluginManager

    return set(PluginManager().builder.collect())


def _misplaced(
    table: Mapping[str, Any], path: tuple[str, ...], prefix: tuple[str, ...], targets: set[str]
) -> Iterator[tuple[tuple[str, ...], bool]]:
    """Each misplaced table's path, and whether it sits where a hook's table goes (only its name is wrong)."""
    for key, value in table.items():
        if not isinstance(value, Mapping):
            continue
        here = (*path, key)
        full = prefix + here
        if _is_hook_location(full, targets):
            if key != HOOK_NAME and _is_near(key, HOOK_NAME):
                yield here, True  # a misspelt hook name: hatchling stops on it as an unknown build hook
            continue  # a hook's own table (this one's models may have any names)
        if _is_near(key, HOOK_NAME) and (_near_a_hook_path(full) or "models" in value):
            yield here, False
            continue
        yield from _misplaced(value, here, prefix, targets)


def _is_near(word: str, target: str) -> bool:
    return target in word.lower() or difflib.SequenceMatcher(None, word.lower(), target).ratio() >= _CLOSE


def _near_a_hook_path(path: tuple[str, ...]) -> bool:
    """Under [tool.hatch], through something like `build`, `targets` or `hooks` (not `envs`)."""
    inside = path[2:-1]
    return (
        len(path) > 2 and _is_near(path[0], "tool") and path[1].lower().startswith("hatch")
        and any(_is_near(word, name) for word in inside for name in ("build", "targets", "hooks"))
    )  # fmt: skip


def _is_hook_location(path: tuple[str, ...], targets: set[str]) -> bool:
    """A path where hatchling looks for a build hook's table (this hook's or any other's)."""
    if path[:3] != ("tool", "hatch", "build"):
        return False
    if len(path) == 5:
        return path[3] == "hooks"
    if len(path) != 7 or path[3] != "targets" or path[5] != "hooks":
        return False
    # A target hatchling does not know is still valid when it is near none it knows: a plugin not installed here.
    return path[4] in targets or not _closest(path[4], targets)


def _meant_path(path: tuple[str, ...], targets: set[str]) -> tuple[str, ...]:
    """The hook path a misplaced table most likely meant: its target's when it names one, else the wheel's."""
    middle = path[2:-1]
    for i, word in enumerate(middle[:-1]):
        if _is_near(word, "targets"):
            target = _closest(middle[i + 1], targets) or middle[i + 1]
            return ("tool", "hatch", "build", "targets", target, "hooks", HOOK_NAME)
    if any(_is_near(word, "hooks") for word in middle) and not any(_is_near(word, "wheel") for word in middle):
        return ("tool", "hatch", "build", "hooks", HOOK_NAME)
    return ("tool", "hatch", "build", "targets", "wheel", "hooks", HOOK_NAME)


def _closest(word: str, choices: set[str]) -> str | None:
    close = difflib.get_close_matches(word.lower(), sorted(choices), n=1, cutoff=_CLOSE)
    return close[0] if close else None
