"""The `ovcrypt` hook table: parsing and checking its shape. Every problem is collected, none raised early.

    [tool.hatch.build.hooks.ovcrypt]                 # global: the hook also guards the sdist
    package = "acme_vision"                          # default: the wheel's only top-level package
    key-env = "OVCRYPT_KEY"                          # variable holding the key, at build and at run time
    key-provider = "acme_vision.keys:get_key"        # optional: called with a key id at run time
    data-key = "keys/models.datakey"                 # optional: the data key, wrapped for its key holders
    segment-size = 1048576                           # 1 MiB .. 4 MiB
    extensions = ["openvino_tokenizers"]             # modules imported before OpenVINO reads an IR
    signing-key = "file:keys/publisher.pem"          # optional: sign the folder (file:, pkcs11:, transit: URI)
    publisher-keys = ["keys/publisher.pub"]          # keys the runtime pins (default: the signing key's own)
    compiled-model-cache = true                      # ship the encrypted compiled-model cache (default: false)

    [tool.hatch.build.hooks.ovcrypt.models]
    detector = "models/detector.xml"                 # an IR .xml; the .bin beside it, same stem
    assistant = "models/assistant"                   # a folder: an exported model (LLM, VLM, image generation)
    det = "models/det.onnx"                          # any other file: converted to IR at build time

A model may also be a table with exactly one of `xml`, `folder` or `source`:

    [tool.hatch.build.hooks.ovcrypt.models.legacy]                            # OpenSSL-recipe files
    xml = "models/legacy_enc.xml"
    source-encryption = "openssl-aes-128-cbc"
    key-hex-env = "LEGACY_KEY_HEX"
    iv-hex-env = "LEGACY_IV_HEX"

    [tool.hatch.build.hooks.ovcrypt.models]                                   # or inline, on one line each:
    assistant = { folder = "models/assistant", kind = "llm" }                   # `kind` overrides detection
    rec = { source = "models/rec.onnx", compress-to-fp16 = false, input = "x[1,3,48,-1]" }
"""

from __future__ import annotations

import difflib
import functools
import keyword
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovcrypt_runtime._format.manifest import FOLDER_KINDS, is_env_name, is_model_name, is_provider_ref
from ovcrypt_runtime._format.spec import DEFAULT_SEGMENT_SIZE, validate_segment_size
from ovcrypt_runtime._loading.openssl import RECIPE

HOOK_NAME = "ovcrypt"
DEFAULT_KEY_ENV = "OVCRYPT_KEY"
# hatchling keeps its own per-hook options in the same table.
RESERVED_KEYS = frozenset(
    {"dependencies", "require-runtime-dependencies", "require-runtime-features", "enable-by-default"}
)
KNOWN_KEYS = frozenset(
    {"models", "package", "key-env", "key-provider", "data-key", "segment-size", "allow-plaintext-sdist", "extensions"}
    | {"signing-key", "publisher-keys"}  # publisher signatures
    | {"compiled-model-cache"}  # ship the cache (and the writer it needs) in the product's runtime
)
# A model table names exactly one of these; each takes its own further options.
MODEL_SOURCES = {
    "xml": frozenset({"source-encryption", "key-hex-env", "iv-hex-env"}),
    "folder": frozenset({"kind"}),
    "source": frozenset({"compress-to-fp16", "input"}),
}
MODEL_KEYS = frozenset(MODEL_SOURCES).union(*MODEL_SOURCES.values())
SOURCE_ENCRYPTIONS = ("none", RECIPE)
# How a model reaches the build: an IR, OpenSSL-recipe IR files, an exported folder, or a file to convert.
IR, OPENSSL, FOLDER, CONVERT = "ir", "openssl", "folder", "convert"


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
    """One entry of `models`: where the model comes from, and how it reaches the build."""

    name: str
    source: Path  # the IR .xml, the exported folder, or the file to convert (sources/convert.py chooses the route)
    path: str  # TOML path, for messages
    origin: str = IR  # IR, OPENSSL, FOLDER or CONVERT
    kind: str | None = None  # a folder's kind when the table sets it; None: detected from its files
    key_hex_env: str | None = None
    iv_hex_env: str | None = None
    compress_to_fp16: bool = True  # what `ovc` and `ov.save_model` do by default
    input: str | None = None  # shapes as `ovc --input` takes them

    @property
    def xml(self) -> Path:
        return self.source

    @property
    def bin(self) -> Path:
        return self.source.with_suffix(".bin")

    @property
    def files(self) -> tuple[Path, Path]:
        """The IR pair of an IR or OpenSSL-recipe model."""
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
    extensions: tuple[str, ...] = ()
    data_key: Path | None = None  # the wrapped data key file (`data-key`): the build unwraps it through its holders
    signing_key: str | None = None  # a signer URI; `file:` paths made absolute
    publisher_keys: tuple[Path, ...] = ()
    compiled_model_cache: bool = False  # the runtime's encrypted cache is shipped only when asked for


def display_path(path: Path, root: Path) -> str:
    """A path as messages show it: relative to the project when it is inside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


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
        problem(key, f"is not an option of build hook `{HOOK_NAME}`{did_you_mean(key, KNOWN_KEYS | RESERVED_KEYS)} "
                     f"(options: {', '.join(sorted(KNOWN_KEYS))})")  # fmt: skip

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

    data_key = string("data-key", None)
    if data_key is not None and (not data_key.strip() or data_key.endswith(("/", "\\"))):
        problem("data-key", 'must be the path of a wrapped data key file, such as "keys/models.datakey"')
        data_key = None

    segment_size = raw.get("segment-size", DEFAULT_SEGMENT_SIZE)
    if type(segment_size) is not int:
        problem("segment-size", f"for build hook `{HOOK_NAME}` must be an integer")
        segment_size = DEFAULT_SEGMENT_SIZE
    elif why := validate_segment_size(segment_size):
        problem("segment-size", why)
    allow_sdist = _boolean(raw, "allow-plaintext-sdist", problem)
    compiled_model_cache = _boolean(raw, "compiled-model-cache", problem)

    extensions = raw.get("extensions", [])
    if not isinstance(extensions, list) or not all(
        isinstance(e, str) and all(is_model_name(p) for p in e.split(".")) for e in extensions
    ):
        problem("extensions", 'must be a list of importable module names, such as ["openvino_tokenizers"]')
        extensions = []

    signing_key, publisher_keys = _signing_options(raw, root, problem)

    models: list[ModelSpec] = []
    raw_models = raw.get("models")
    if raw_models is None:
        problem(
            "models",
            "is required: a table of model name -> path (an IR .xml, a model folder, or a file to convert), "
            'such as { detector = "models/detector.xml" }',
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
        tuple(models), package, key_env, key_provider, segment_size, allow_sdist, location, tuple(extensions),
        _resolve(root, data_key) if data_key is not None else None, signing_key, publisher_keys, compiled_model_cache,
    )  # fmt: skip
    return options, problems


Report = Callable[[str, str], None]  # (option key, message): one problem of the table


def _boolean(raw: Mapping[str, Any], key: str, problem: Report) -> bool:
    """A true/false option, false when absent (or not a boolean: then a problem)."""
    value = raw.get(key, False)
    if not isinstance(value, bool):
        problem(key, f"for build hook `{HOOK_NAME}` must be true or false")
        return False
    return value


def _signing_options(raw: Mapping[str, Any], root: Path, problem: Report) -> tuple[str | None, tuple[Path, ...]]:
    """`signing-key` (a signer URI; a `file:` path is made absolute against the project) and `publisher-keys`
    (PEM ECDSA P-256 public keys, relative to the project)."""
    from ovcrypt_runtime._errors import SignatureError
    from ovcrypt_runtime._keys.signature import load_public_key

    signing_key = raw.get("signing-key")
    schemes = ("file:", "pkcs11:", "transit:")
    if signing_key is not None and not (isinstance(signing_key, str) and signing_key.startswith(schemes)):
        problem("signing-key", 'must be a URI: "file:keys/publisher.pem", "pkcs11:token=...;object=..." or '
                               '"transit:KEYNAME"')  # fmt: skip
        signing_key = None
    if isinstance(signing_key, str) and signing_key.startswith("file:"):
        signing_key = f"file:{root / signing_key[len('file:'):]}"
    raw_keys = raw.get("publisher-keys", [])
    if not isinstance(raw_keys, list) or not all(isinstance(k, str) for k in raw_keys):
        problem("publisher-keys", 'must be a list of PEM public key files, such as ["keys/publisher.pub"]')
        return signing_key, ()
    keys = tuple(root / k for k in raw_keys)
    for raw_key, path in zip(raw_keys, keys, strict=True):
        try:
            load_public_key(path.read_bytes(), raw_key)
        except OSError as exc:
            problem("publisher-keys", f"names {raw_key}, which cannot be read ({exc.strerror})")
        except SignatureError as exc:
            problem("publisher-keys", f"names {exc}")
    if keys and signing_key is None:
        problem("publisher-keys", "needs `signing-key`: a product that pins publisher keys must be signed")
    return signing_key, keys


def _parse_model(name: str, value: Any, root: Path, path: str, problems: list[Problem]) -> ModelSpec | None:
    found = len(problems)
    if not is_model_name(name):
        problems.append(Problem(path, "is not a valid model name: use a Python identifier, such as `detector`"))
    elif why := model_name_problem(name):
        problems.append(Problem(path, why))
    if isinstance(value, str):
        return _model_from_path(name, value, root, path) if len(problems) == found else None
    sources = [key for key in MODEL_SOURCES if isinstance(value, Mapping) and key in value]
    if not isinstance(value, Mapping) or len(sources) != 1:
        unknown = [key for key in value if key not in MODEL_KEYS] if isinstance(value, Mapping) and not sources else []
        typos = [f"`{key}`: {meant[2:]}" for key in unknown if (meant := did_you_mean(key, MODEL_SOURCES))]
        hint = f" ({', '.join(typos)})" if typos else ""
        problems.append(Problem(path, "must be a path (an IR .xml, a model folder, or a file to convert), or a table "
                                      f"with exactly one of `xml`, `folder` or `source`{hint}"))  # fmt: skip
        return None
    (source,) = sources
    allowed = MODEL_SOURCES[source]
    for key in sorted(set(value) - {source} - allowed):
        if key in MODEL_KEYS:
            why = f"does not apply to a model given by `{source}`"
        else:
            why = f"is not a model option{did_you_mean(key, allowed)}"
        problems.append(Problem(f"{path}.{key}", f"{why} (options with `{source}`: {', '.join(sorted(allowed))})"))
    location = value[source]
    if not isinstance(location, str) or (source == "xml" and not location.endswith(".xml")):
        problems.append(Problem(f"{path}.{source}", "must be a path to an IR .xml file" if source == "xml" else
                                "must be a path"))  # fmt: skip
        return None
    spec = {"xml": _parse_ir_table, "folder": _parse_folder_table, "source": _parse_source_table}[source](
        name, value, _resolve(root, location), path, problems
    )
    return spec if len(problems) == found else None


def did_you_mean(key: str, options: Iterable[str]) -> str:
    """`; did you mean `key-env`?` for a misspelt option (`key_env`, `keyenv`, `modles`), or "" when none is close."""
    choices = sorted(options)
    spelt = key.strip().lower().replace("_", "-")
    close = [spelt] if spelt in choices else difflib.get_close_matches(spelt, choices, n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def model_name_problem(name: str) -> str | None:
    """Why an identifier cannot name a model, or None. Each model is also an attribute of `_ovcrypt` and a line
    of its type stub (`name: ov.CompiledModel`), so the name must work in both.

    Soft keywords `match`, `case` and `type` are accepted: they stay valid names in attribute access, imports and
    annotations (`match: ov.CompiledModel` parses), unlike hard keywords (`class: ...` does not). The soft keyword
    `_` is refused with every name that starts with `_`: `_ovcrypt.__getattr__` never gives those as models.
    """
    if keyword.iskeyword(name):
        return (
            f"is a Python keyword: `from ..._ovcrypt import {name}` and the generated type stub would be syntax "
            f"errors; choose another name, such as `{name.lower()}_model`"
        )
    if name.startswith("_"):
        return (
            "starts with `_`, which `_ovcrypt` keeps for its own modules (`_keys`, `_settings`, ...) and never gives "
            f"as a model attribute; choose a name without the leading `_`, such as `{name.lstrip('_') or 'model'}`"
        )
    if name in runtime_names():
        return (
            f"is a name the runtime module `_ovcrypt` already has: `from ..._ovcrypt import {name}` would give the "
            f"runtime's own `{name}`, not the model; choose another name, such as `{name}_model`"
        )
    from .hook.stubs import stub_names

    if name in stub_names():
        return (
            f"is a name the type stub of `_ovcrypt` already uses (`{name}`), and the model's line there would "
            f"replace it; choose another name, such as `{name}_model`"
        )
    return None


@functools.cache
def runtime_names() -> frozenset[str]:
    """The names a product's `_ovcrypt` binds itself, which a model's attribute can never override (module
    globals win over `__getattr__`): the runtime module's globals (its functions and errors, and what it imports)
    and its submodules. Computed from the runtime package, which every product gets a verbatim copy of."""
    import ovcrypt_runtime as runtime

    submodules = {module.name for module in pkgutil.iter_modules(runtime.__path__)}
    return frozenset(vars(runtime)) | frozenset(runtime.__all__) | submodules


def _resolve(root: Path, location: str) -> Path:
    return Path(location) if Path(location).is_absolute() else root / location


def _model_from_path(name: str, location: str, root: Path, path: str) -> ModelSpec:
    """A bare path: `.xml` is an IR, a directory is an exported model folder, any other file is converted."""
    source = _resolve(root, location)
    if location.endswith(".xml"):
        return ModelSpec(name, source, path)
    if location.endswith(".safetensors"):  # a LoRA adapter: a one-file model of kind "adapter"
        return ModelSpec(name, source, path, FOLDER, kind="adapter")
    if source.is_dir() or not source.suffix:
        return ModelSpec(name, source, path, FOLDER)
    return ModelSpec(name, source, path, CONVERT)


def _parse_ir_table(name: str, value: Mapping[str, Any], xml: Path, path: str, problems: list[Problem]) -> ModelSpec:
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
    origin = OPENSSL if source == RECIPE else IR
    return ModelSpec(name, xml, path, origin, key_hex_env=envs["key-hex-env"], iv_hex_env=envs["iv-hex-env"])


def _parse_folder_table(
    name: str, value: Mapping[str, Any], folder: Path, path: str, problems: list[Problem]
) -> ModelSpec:
    kind = value.get("kind")
    if kind is not None and kind not in FOLDER_KINDS:
        problems.append(Problem(f"{path}.kind", f"must be one of {', '.join(map(repr, FOLDER_KINDS))}"))
    return ModelSpec(name, folder, path, FOLDER, kind=kind if isinstance(kind, str) else None)


def _parse_source_table(
    name: str, value: Mapping[str, Any], source: Path, path: str, problems: list[Problem]
) -> ModelSpec:
    from .sources.convert import parse_conversion_options

    options, found = parse_conversion_options(value, path)
    problems += [Problem(at, message) for at, message in found]
    return ModelSpec(name, source, path, CONVERT, compress_to_fp16=options.compress_to_fp16, input=options.input)
