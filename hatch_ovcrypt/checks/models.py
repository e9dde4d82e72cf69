"""Checking each configured model before anything is encrypted: its files, its kind, and that OpenVINO reads it.

Every IR is read with OpenVINO as the runtime will read it, with the openvino-tokenizers extension
loaded (when it is installed) and any extension modules the table names, so tokenizer IRs and other
extension ops validate. A model given as a file to convert is converted here, in memory, once: the
plan keeps the IR for the writer.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ovcrypt_runtime._errors import OvcryptError, openvino_message
from ovcrypt_runtime._format.manifest import IR_KIND
from ovcrypt_runtime._loading.loader import owning_tensor
from ovcrypt_runtime._loading.openssl import check_xml, decrypt_openssl_array

from ..config import CONVERT, FOLDER, OPENSSL, ModelSpec, Problem, display_path
from ..sources.models import folder_listing, recipe_key_iv
from .kinds import NotFromMemory, detect_kind, json_reader, missing_files

if TYPE_CHECKING:
    from ..sources.convert import ConvertedIR

TOKENIZERS_MODULE = "openvino_tokenizers"
# How an IR using extension ops says so: its layers carry version="extension".
_EXTENSION_MARK = b'version="extension"'
SDIST_HINT = (
    "; this is an sdist, and hatch-ovcrypt keeps model files out of sdists: build the wheel from the source tree "
    "(`python -m build --wheel`, `uv build --wheel` or `hatch build -t wheel`)"
)


@dataclass(frozen=True)
class ModelPlan:
    """What the checks learnt about one model that the writer needs."""

    kind: str
    converted: ConvertedIR | None = None
    # Whether any of its IRs uses extension ops, so the runtime must import the extension modules first.
    uses_extensions: bool = False
    files: dict[str, Path] = field(default_factory=dict)  # a folder's files by relative path


def load_extensions(modules: Iterable[str]) -> list[str]:
    """Import openvino_tokenizers (when installed) and the named extension modules; return the problems."""
    problems = []
    # Only needed when an IR uses its ops; reading such an IR without it fails with OpenVINO's message.
    with contextlib.suppress(ImportError):
        importlib.import_module(TOKENIZERS_MODULE)
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            problems.append(f"names {module!r}, which cannot be imported here ({exc}): install it in the build")
    return problems


def check_model(
    spec: ModelSpec, root: Path, environ: Mapping[str, str], from_sdist: bool, extensions: Sequence[str] = ()
) -> tuple[ModelPlan | None, list[Problem]]:
    """Check one model; return what the writer needs, or None and the problems (each with its TOML path)."""
    if spec.origin in (FOLDER, CONVERT) and not spec.source.exists():
        hint = SDIST_HINT if from_sdist else _maker_hint(root)
        return None, [Problem(spec.path, f"names {display_path(spec.source, root)}, which does not exist{hint}")]
    try:
        if spec.origin == FOLDER:
            return _check_folder(spec, root)
        if spec.origin == CONVERT:
            return _check_conversion(spec, root, extensions)
        return _check_ir(spec, root, environ, from_sdist)
    except OvcryptError as exc:
        return None, [Problem(spec.path, str(exc))]


def _check_ir(
    spec: ModelSpec, root: Path, environ: Mapping[str, str], from_sdist: bool
) -> tuple[ModelPlan | None, list[Problem]]:
    missing = [path for path in spec.files if not path.is_file()]
    if missing:
        what = " and ".join(display_path(p, root) for p in missing)
        beside = " (the .bin must sit beside the .xml, same stem)" if missing == [spec.bin] else _maker_hint(root)
        hint = SDIST_HINT if from_sdist else beside
        verb = "do" if len(missing) > 1 else "does"
        return None, [Problem(spec.path, f"names {what}, which {verb} not exist{hint}")]
    import openvino as ov

    try:
        if spec.origin == OPENSSL:
            key, iv = recipe_key_iv(spec, environ)
            xml = decrypt_openssl_array(spec.xml, key, iv, spec.xml.name)
            check_xml(xml.data, spec.xml.name)
            weights = decrypt_openssl_array(spec.bin, key, iv, spec.bin.name)
            ov.Core().read_model(xml.tobytes(), owning_tensor(weights))
            uses = _EXTENSION_MARK in xml.tobytes()
            xml.fill(0)
            weights.fill(0)
        else:
            ov.Core().read_model(str(spec.xml))
            uses = _EXTENSION_MARK in spec.xml.read_bytes()
    except OvcryptError:
        raise
    except Exception as exc:  # openvino raises RuntimeError with multi-line text
        return None, [_unreadable(spec, spec.xml, root, exc)]
    return ModelPlan(IR_KIND, uses_extensions=uses), []


def _check_folder(spec: ModelSpec, root: Path) -> tuple[ModelPlan | None, list[Problem]]:
    if not spec.source.is_dir():
        return None, [Problem(spec.path, f"names {display_path(spec.source, root)}, which is not a folder")]
    files, found = folder_listing(spec.source, spec.name)
    problems = [Problem(spec.path, f"folder {display_path(spec.source, root)}: {why}") for why in found]
    if problems:
        return None, problems
    kind = spec.kind
    if kind is None:
        try:
            kind = detect_kind(set(files), json_reader(lambda p: files[p].read_bytes()))
        except NotFromMemory as exc:
            return None, [Problem(spec.path, _not_from_memory(spec, root, str(exc)))]
    if lacking := missing_files(kind, set(files)):
        where = f"`{spec.path}.kind`" if spec.kind else "its files"
        return None, [Problem(spec.path, f"is a {kind!r} model ({where}), but {display_path(spec.source, root)} lacks "
                                         f"{', '.join(lacking)}")]  # fmt: skip
    import openvino as ov

    core = ov.Core()
    uses = False
    for relpath in sorted(p for p in files if p.endswith(".xml")):
        xml = files[relpath]
        weights = xml.with_suffix(".bin")
        try:
            core.read_model(str(xml), str(weights)) if weights.is_file() else core.read_model(str(xml))
        except Exception as exc:
            problems.append(_unreadable(spec, xml, root, exc))
        uses = uses or _EXTENSION_MARK in xml.read_bytes()
    if problems:
        return None, problems
    return ModelPlan(kind, uses_extensions=uses, files=files), []


def _unreadable(spec: ModelSpec, xml: Path, root: Path, exc: Exception) -> Problem:
    message = openvino_message(exc)
    hint = ""
    if "extension" in message and importlib.util.find_spec(TOKENIZERS_MODULE) is None:
        hint = _tokenizers_hint(root)
    return Problem(spec.path, f"OpenVINO cannot read {display_path(xml, root)}: {message}{hint}")


def _tokenizers_hint(root: Path) -> str:
    """What to install where, when the Python running the checks lacks openvino-tokenizers.

    A build's isolated environment has what [build-system] requires; `hatch-ovcrypt check` and --no-isolation
    builds run in the user's own. When the pyproject already asks for the extension, only that Python lacks it.
    """
    import sys

    here = (
        f"install `hatch-ovcrypt[genai]` into the Python these checks run in ({sys.executable}), as "
        "`hatch-ovcrypt check` and --no-isolation builds use their own Python, not the build's"
    )
    if _build_requires_tokenizers(root):
        return (
            "; its ops need the openvino-tokenizers extension, which [build-system] requires already asks for: "
            f"the pyproject is right, {here}"
        )
    return (
        "; its ops need the openvino-tokenizers extension: add it to the build "
        f'(`requires = ["hatchling", "hatch-ovcrypt[genai]"]` under [build-system]), and {here}'
    )


def _build_requires_tokenizers(root: Path) -> bool:
    """Whether the pyproject's [build-system] requires asks for openvino-tokenizers (or hatch-ovcrypt[genai])."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    from .pyproject import PYPROJECT, ProjectFileError, read_toml

    try:
        requires = read_toml(root / PYPROJECT).get("build-system", {}).get("requires", [])
    except (OSError, ProjectFileError, AttributeError):
        return False
    for text in requires if isinstance(requires, list) else []:
        try:
            requirement = Requirement(str(text))
        except InvalidRequirement:
            continue
        name = canonicalize_name(requirement.name)
        if name == "openvino-tokenizers" or (name == "hatch-ovcrypt" and "genai" in requirement.extras):
            return True
    return False


MODEL_MAKER = "make_models.py"


def _maker_hint(root: Path) -> str:
    """How to make missing models, when the project says: a `make_models.py` at its root (the example's)."""
    return f"; this project makes its models with `python {MODEL_MAKER}`" if (root / MODEL_MAKER).is_file() else ""


def _not_from_memory(spec: ModelSpec, root: Path, what: str) -> str:
    folder = display_path(spec.source, root)
    return (
        f"folder {folder} is {what}; openvino-genai cannot build its pipeline from memory, and "
        'hatch-ovcrypt never decrypts to disk: set `kind = "files"` in a table '
        f'(`{spec.name} = {{ folder = "{folder}", kind = "files" }}`) to ship its files, '
        "reached with read_model/compile_model(part=...) and read_file, or a kind if it is one of llm, vlm, text2image"
    )


def _check_conversion(
    spec: ModelSpec, root: Path, extensions: Sequence[str]
) -> tuple[ModelPlan | None, list[Problem]]:
    """Convert the source in memory (sources/convert.py): the plan keeps the IR, so the build converts once."""
    from ..sources.convert import ConversionError, ConversionOptions, convert_to_ir

    try:
        converted = convert_to_ir(spec.source, ConversionOptions(spec.compress_to_fp16, spec.input), extensions)
    except ConversionError as exc:
        at = f"{spec.path}.input" if spec.input and str(exc).startswith("input ") else spec.path
        return None, [Problem(at, str(exc))]
    return ModelPlan(IR_KIND, converted, _EXTENSION_MARK in converted.xml), []


def runtime_extensions(configured: Sequence[str], plans: Mapping[str, ModelPlan]) -> tuple[str, ...]:
    """The modules the runtime imports before reading an IR: the table's, and openvino_tokenizers when needed."""
    needed = list(configured)
    if any(plan.uses_extensions for plan in plans.values()) and TOKENIZERS_MODULE not in needed:
        needed.insert(0, TOKENIZERS_MODULE)
    return tuple(needed)

