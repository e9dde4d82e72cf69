"""Type information for a product's `_ovcrypt`: `py.typed` and an `__init__.pyi` whose model names are Literals.

With it, mypy and pyright flag `compile_model("detectr")`, and editors complete model, part and file names
and know that `from acme_vision._ovcrypt import assistant` is an openvino_genai.LLMPipeline. The stub states
the public API of the runtime the product ships (ovcrypt_runtime/__init__.py, less the optional parts it
does not ship: vendoring.py); a test checks the two agree.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from ovcrypt_runtime._format.manifest import FOLDER_KINDS, IR_KIND, Manifest

from .vendoring import RuntimeParts

# What each kind of model is as an attribute of `_ovcrypt` (ovcrypt_runtime/__init__.py's __getattr__).
ATTRIBUTE_TYPES = {
    IR_KIND: "ov.CompiledModel",
    "llm": "openvino_genai.LLMPipeline",
    "vlm": "openvino_genai.VLMPipeline",
    "text2image": "openvino_genai.Text2ImagePipeline",
    "whisper": "openvino_genai.WhisperPipeline",
    "text2speech": "openvino_genai.Text2SpeechPipeline",
    "text_embedding": "openvino_genai.TextEmbeddingPipeline",
    "text_rerank": "openvino_genai.TextRerankPipeline",
    "text2video": "openvino_genai.Text2VideoPipeline",
}
# The Literal aliases of the stub: each names the models of its kinds.
KIND_ALIASES = {
    "LLMName": ("llm",), "VLMName": ("vlm",), "Text2ImageName": ("text2image",), "WhisperName": ("whisper",),
    "Text2SpeechName": ("text2speech",), "EmbeddingName": ("text_embedding",), "RerankName": ("text_rerank",),
    "Text2VideoName": ("text2video",), "AdapterName": ("adapter",), "BatchingName": ("llm", "vlm"),
}  # fmt: skip

_TEMPLATE = '''from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal, NoReturn

import openvino as ov
{genai_import}
from ._errors import (
    DeviceError as DeviceError,
    FormatError as FormatError,
    IntegrityError as IntegrityError,
    KeyFormatError as KeyFormatError,
    KeyMissingError as KeyMissingError,
    ManifestError as ManifestError,
    ModelNotFoundError as ModelNotFoundError,
    OvcryptError as OvcryptError,
    UnsafeConfigError as UnsafeConfigError,
    UnsupportedModelError as UnsupportedModelError,
    WrongKeyError as WrongKeyError,
)
from ._keys.sources import KeyLike, KeyProvider

ModelName = {models}
PartName = {parts}
FilePath = {files}
{aliases}
FolderName = {folders}
Adapters = AdapterName | Sequence[AdapterName] | Mapping[AdapterName, float]

def model_names() -> list[ModelName]: ...
def read_model(name: ModelName, part: PartName | None = None) -> ov.Model: ...
def compile_model(
    name: ModelName,
    device: str = "CPU",
    config: dict[str, Any] | None = None,
    cache_dir: {cache_dir} = None,
    *,
    part: PartName | None = None,
) -> ov.CompiledModel: ...
def read_file(name: ModelName, path: FilePath) -> bytes: ...
{pipelines}def set_key(key: KeyLike) -> str: ...
def set_key_provider(provider: KeyProvider | None) -> None: ...
def harden_process() -> bool: ...
{openssl}def unload(name: ModelName | None = None) -> None: ...

{attributes}
'''


# Stated only when the product ships that part of the runtime (otherwise it raises UnsupportedModelError).
_PIPELINES = '''def tokenizer(name: FolderName, **properties: Any) -> openvino_genai.Tokenizer: ...
def generation_config(name: FolderName) -> openvino_genai.GenerationConfig: ...
def llm_pipeline(
    name: LLMName, device: str = "CPU", *, draft: LLMName | None = None, adapters: Adapters | None = None,
    **properties: Any,
) -> openvino_genai.LLMPipeline: ...
def vlm_pipeline(name: VLMName, device: str = "CPU", **properties: Any) -> openvino_genai.VLMPipeline: ...
def text2image_pipeline(
    name: Text2ImageName, device: str = "CPU", *, adapters: Adapters | None = None, **properties: Any
) -> openvino_genai.Text2ImagePipeline: ...
def image2image_pipeline(
    name: Text2ImageName, device: str = "CPU", *, adapters: Adapters | None = None, **properties: Any
) -> openvino_genai.Image2ImagePipeline: ...
def inpainting_pipeline(
    name: Text2ImageName, device: str = "CPU", *, adapters: Adapters | None = None, **properties: Any
) -> openvino_genai.InpaintingPipeline: ...
def whisper_pipeline(name: WhisperName, device: str = "CPU", **properties: Any) -> openvino_genai.WhisperPipeline: ...
def text2speech_pipeline(
    name: Text2SpeechName, device: str = "CPU", **properties: Any
) -> openvino_genai.Text2SpeechPipeline: ...
def text_embedding_pipeline(
    name: EmbeddingName, device: str = "CPU", config: openvino_genai.TextEmbeddingPipeline.Config | None = None,
    **properties: Any,
) -> openvino_genai.TextEmbeddingPipeline: ...
def text_rerank_pipeline(
    name: RerankName, device: str = "CPU", config: openvino_genai.TextRerankPipeline.Config | None = None,
    **properties: Any,
) -> openvino_genai.TextRerankPipeline: ...
def text2video_pipeline(
    name: Text2VideoName, device: str = "CPU", **properties: Any
) -> openvino_genai.Text2VideoPipeline: ...
def continuous_batching_pipeline(
    name: BatchingName, device: str = "CPU", scheduler_config: openvino_genai.SchedulerConfig | None = None, *,
    tokenizer_properties: dict[str, Any] | None = None, vision_encoder_properties: dict[str, Any] | None = None,
    **properties: Any,
) -> openvino_genai.ContinuousBatchingPipeline: ...
def memory_folder(name: ModelName) -> AbstractContextManager[Path]: ...
def allow_config_files(allow: bool = True) -> None: ...
'''
_OPENSSL = '''def load_openssl_model(
    xml_path: str | Path, key: bytes | str, iv: bytes | str, *, bin_path: str | Path | None = None
) -> ov.Model: ...
'''


_CACHE_DIR = "str | Path | None"  # compile_model's cache_dir= where the product ships the compiled-model cache


def _literal(values: list[str]) -> str:
    """`Literal[...]` of the names, or NoReturn when there are none (no argument is valid then)."""
    return f"Literal[{', '.join(repr(v) for v in sorted(set(values)))}]" if values else "NoReturn"


def render_stub(manifest: Manifest, header: str, shipped: RuntimeParts) -> str:
    """The `__init__.pyi` of a product's `_ovcrypt`, for the models in its manifest and the parts it ships."""
    models = manifest.models
    parts = [part for name, entry in models.items() for part in entry.parts(name)]
    files = [path for entry in models.values() for path in entry.files]

    def of_kind(*kinds: str) -> str:
        return _literal([name for name, entry in models.items() if entry.kind in kinds])

    typed = [(name, ATTRIBUTE_TYPES.get(entry.kind)) for name, entry in sorted(models.items())]
    attributes = "\n".join(f"{name}: {kind}" for name, kind in typed if kind)
    aliases = "\n".join(f"{alias} = {of_kind(*kinds)}" for alias, kinds in KIND_ALIASES.items())
    folders = of_kind(*(kind for kind in FOLDER_KINDS if kind != "adapter"))
    return header + _TEMPLATE.format(
        models=_literal(list(models)), parts=_literal(parts), files=_literal(files), aliases=aliases,
        folders=folders, attributes=attributes, genai_import="import openvino_genai\n" if shipped.pipelines else "",
        pipelines=_PIPELINES if shipped.pipelines else "", openssl=_OPENSSL if shipped.openssl else "",
        cache_dir=_CACHE_DIR if shipped.cache else "None",  # without the cache, only None is accepted
    )  # fmt: skip


@functools.cache
def stub_names() -> frozenset[str]:
    """The names the stub binds at its top level (imports, aliases, functions): a model of such a name would
    rebind one of them, and its attribute line would break the stub."""
    empty = dict.fromkeys(("models", "parts", "files", "folders"), "NoReturn")
    aliases = "\n".join(f"{alias} = NoReturn" for alias in KIND_ALIASES)
    full = {"genai_import": "import openvino_genai\n", "pipelines": _PIPELINES, "openssl": _OPENSSL,
            "cache_dir": _CACHE_DIR}  # every part  # fmt: skip
    tree = ast.parse(_TEMPLATE.format(**empty, **full, aliases=aliases, attributes=""))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).partition(".")[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
    return frozenset(names)


def write_type_information(dest: Path, manifest: Manifest, header: str, shipped: RuntimeParts) -> None:
    """`py.typed` and `__init__.pyi` in a rendered `_ovcrypt` folder."""
    (dest / "py.typed").write_text("")
    (dest / "__init__.pyi").write_text(render_stub(manifest, header, shipped), "utf-8")
