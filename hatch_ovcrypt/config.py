"""The `ovcrypt` hook table: parsing and checking its shape. Every problem is collected, none raised early.

    [tool.hatch.build.targets.wheel.hooks.ovcrypt]
    models = { detector = "models/detector.xml" }   # name -> IR .xml; the .bin beside it, same stem
    package = "acme_vision"                          # default: the wheel's only top-level package
    key-env = "OVCRYPT_KEY"                          # variable holding the key, at build and at run time
    key-provider = "acme_vision.keys:get_key"        # optional: called with a key id at run time
    segment-size = 1048576                           # 1 MiB .. 4 MiB
    allow-plaintext-sdist = false                    # true only if the sdist may ship plaintext IR

A model may also be a table, for models that are already encrypted with the OpenSSL recipe:

    legacy = { xml = "models/legacy_enc.xml", source-encryption = "openssl-aes-128-cbc",
               key-hex-env = "LEGACY_KEY_HEX", iv-hex-env = "LEGACY_IV_HEX" }
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runtime._manifest import is_env_name, is_model_name, is_provider_ref
from .runtime._openssl import RECIPE
from .runtime._spec import DEFAULT_SEGMENT_SIZE, validate_segment_size

HOOK_NAME = "ovcrypt"
DEFAULT_KEY_ENV = "OVCRYPT_KEY"
# hatchling keeps its own per-hook options in the same table.
RESERVED_KEYS = frozenset(
    {"dependencies", "require-runtime-dependencies", "require-runtime-features", "enable-by-default"}
)
KNOWN_KEYS = frozenset({"models", "package", "key-env", "key-provider", "segment-size", "allow-plaintext-sdist"})
MODEL_KEYS = frozenset({"xml", "source-encryption", "key-hex-env", "iv-hex-env"})
SOURCE_ENCRYPTIONS = ("none", RECIPE)


@dataclass(frozen=True)
class Problem:
    path: str  # TOML path of the offending value
    message: str

    def __str__(self) -> str:
        return f"`{self.path}` {self.message}"


class ConfigurationError(Exception):
    """Every problem found in the hook table (and the project around it), each with its TOML path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.problems)
        lines = [f"hatch-ovcrypt: {count} problem{'s' if count != 1 else ''} to fix before building:"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    xml: Path
    source_encryption: str  # "none" or RECIPE
    key_hex_env: str | None
    iv_hex_env: str | None
    path: str  # TOML path, for messages

    @property
    def bin(self) -> Path:
        return self.xml.with_suffix(".bin")

    @property
    def files(self) -> tuple[Path, Path]:
        return self.xml, self.bin


@dataclass(frozen=True)
class Options:
    models: tuple[ModelSpec, ...]
    package: str | None
    key_env: str
    key_provider: str | None
    segment_size: int
    allow_plaintext_sdist: bool
    location: str


def hook_location(target_config: Mapping[str, Any], target: str) -> str:
    """Where the table the build uses lives: a target's table replaces the global one."""
    if HOOK_NAME in target_config.get("hooks", {}):
        return f"tool.hatch.build.targets.{target}.hooks.{HOOK_NAME}"
    return f"tool.hatch.build.hooks.{HOOK_NAME}"


def parse_options(raw: Mapping[str, Any], root: Path, location: str) -> tuple[Options, list[Problem]]:
    """Check the table's shape: keys, types, names. Files and keys are checked by `checks`."""
    problems: list[Problem] = []

    def problem(key: str, message: str) -> None:
        problems.append(Problem(f"{location}.{key}" if key else location, message))

    for key in sorted(set(raw) - KNOWN_KEYS - RESERVED_KEYS):
        problem(key, f"is not an option of build hook `{HOOK_NAME}` (options: {', '.join(sorted(KNOWN_KEYS))})")

    def string(key: str, default: str | None) -> str | None:
        value = raw.get(key, default)
        if value is not None and not isinstance(value, str):
            problem(key, f"for build hook `{HOOK_NAME}` must be a string")
            return default
        return value

    package = string("package", None)
    if package is not None and not all(is_model_name(part) for part in package.split(".")):
        problem("package", "must be an importable package name, such as `acme_vision`")
    key_env = string("key-env", DEFAULT_KEY_ENV) or DEFAULT_KEY_ENV
    if not is_env_name(key_env):
        problem("key-env", "must be an environment variable name (letters, digits and _)")
    key_provider = string("key-provider", None)
    if key_provider is not None and not is_provider_ref(key_provider):
        problem("key-provider", "must be `module:function`, such as `acme_vision.keys:get_key`")

    segment_size = raw.get("segment-size", DEFAULT_SEGMENT_SIZE)
    if type(segment_size) is not int:
        problem("segment-size", f"for build hook `{HOOK_NAME}` must be an integer")
        segment_size = DEFAULT_SEGMENT_SIZE
    elif why := validate_segment_size(segment_size):
        problem("segment-size", why)
    allow_sdist = raw.get("allow-plaintext-sdist", False)
    if not isinstance(allow_sdist, bool):
        problem("allow-plaintext-sdist", f"for build hook `{HOOK_NAME}` must be a boolean")
        allow_sdist = False

    models: list[ModelSpec] = []
    raw_models = raw.get("models")
    if raw_models is None:
        problem(
            "models",
            'is required: a table of model name -> IR .xml path, such as { detector = "models/detector.xml" }',
        )
    elif not isinstance(raw_models, Mapping):
        problem("models", f"for build hook `{HOOK_NAME}` must be a table")
    elif not raw_models:
        problem("models", "must name at least one model")
    else:
        for name, value in raw_models.items():
            spec = _parse_model(name, value, root, f"{location}.models.{name}", problems)
            if spec is not None:
                models.append(spec)

    options = Options(
        tuple(models), package, key_env, key_provider, segment_size, allow_sdist, location
    )  # fmt: skip
    return options, problems


def _parse_model(name: str, value: Any, root: Path, path: str, problems: list[Problem]) -> ModelSpec | None:
    found = len(problems)
    if not is_model_name(name):
        problems.append(Problem(path, "is not a valid model name: use a Python identifier, such as `detector`"))
    xml_at = path  # the TOML path that holds the .xml path
    if isinstance(value, str):
        value = {"xml": value}
    elif isinstance(value, Mapping) and "xml" in value:
        xml_at = f"{path}.xml"
    if not isinstance(value, Mapping):
        problems.append(Problem(path, "must be a path to an IR .xml, or a table with `xml` and options"))
        return None
    for key in sorted(set(value) - MODEL_KEYS):
        problems.append(Problem(f"{path}.{key}", f"is not a model option (options: {', '.join(sorted(MODEL_KEYS))})"))
    xml = value.get("xml")
    if not isinstance(xml, str) or not xml.endswith(".xml"):
        problems.append(Problem(xml_at, "must be a path to an IR .xml file"))
    source = value.get("source-encryption", "none")
    if source not in SOURCE_ENCRYPTIONS:
        problems.append(
            Problem(f"{path}.source-encryption", f"must be one of {', '.join(map(repr, SOURCE_ENCRYPTIONS))}")
        )
    envs: dict[str, str | None] = {}
    for key in ("key-hex-env", "iv-hex-env"):
        env = value.get(key)
        envs[key] = env if isinstance(env, str) else None
        if source == RECIPE and not (isinstance(env, str) and is_env_name(env)):
            problems.append(
                Problem(f"{path}.{key}", f"must name the environment variable holding the recipe's hex {key[:-8]}")
            )
        elif source != RECIPE and env is not None:
            problems.append(Problem(f"{path}.{key}", f"only applies with source-encryption = {RECIPE!r}"))
    if len(problems) != found or not isinstance(xml, str):
        return None
    xml_path = Path(xml) if Path(xml).is_absolute() else root / xml
    return ModelSpec(name, xml_path, str(source), envs["key-hex-env"], envs["iv-hex-env"], path)
