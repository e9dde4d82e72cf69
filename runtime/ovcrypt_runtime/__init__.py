"""Encrypted OpenVINO models of this package, decrypted in memory only (hatch-ovcrypt runtime).

    from <package>._ovcrypt import compile_model
    compiled = compile_model("detector")            # key from $OVCRYPT_KEY (see _settings.py)
    from <package>._ovcrypt import detector         # the same, compiled once on first access

Importing this module decrypts nothing and imports neither openvino nor cryptography; the work
happens on first use. It needs only openvino, cryptography and numpy, never hatch-ovcrypt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any

from ._errors import (
    DeviceError,
    FormatError,
    IntegrityError,
    KeyFormatError,
    KeyMissingError,
    ManifestError,
    ModelNotFoundError,
    OvcryptError,
    UnsafeConfigError,
    UnsupportedModelError,
    WrongKeyError,
)
from ._format.spec import forget_keys

if TYPE_CHECKING:
    from pathlib import Path

    import openvino as ov
    import openvino_genai

    from ._keys.sources import KeyLike, KeyProvider
    from ._loading.runtime import Runtime

__all__ = [
    "DeviceError",
    "FormatError",
    "IntegrityError",
    "KeyFormatError",
    "KeyMissingError",
    "ManifestError",
    "ModelNotFoundError",
    "OvcryptError",
    "UnsafeConfigError",
    "UnsupportedModelError",
    "WrongKeyError",
    "allow_config_files",
    "compile_model",
    "continuous_batching_pipeline",
    "generation_config",
    "harden_process",
    "image2image_pipeline",
    "inpainting_pipeline",
    "llm_pipeline",
    "load_openssl_model",
    "memory_folder",
    "model_names",
    "read_file",
    "read_model",
    "set_key",
    "set_key_provider",
    "text2image_pipeline",
    "text2speech_pipeline",
    "text2video_pipeline",
    "text_embedding_pipeline",
    "text_rerank_pipeline",
    "tokenizer",
    "unload",
    "vlm_pipeline",
    "whisper_pipeline",
]

# What a product ships beyond the core depends on its models (the build vendors only what they use): these say
# why a function of a part not shipped is missing, instead of a ModuleNotFoundError naming a private module.
_NO_PIPELINES = (
    "this product ships no GenAI pipelines: it was built without a GenAI folder model (any kind but ir and files), "
    "so {function}() is not in its runtime; add such a model to the hook's `models` and rebuild"
)
_NO_OPENSSL = (
    "this product ships no OpenSSL-recipe loader: it was built without a `source-encryption` model, so "
    "{function}() is not in its runtime; add such a model to the hook's `models` and rebuild"
)


@contextmanager
def _shipped(refusal: str, function: str) -> Iterator[None]:
    """Import an optional part of the runtime; UnsupportedModelError (one line) when this product did not ship it."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith(f"{__name__}._"):
            raise  # a missing dependency (openvino_genai, ...) keeps its own message
        raise UnsupportedModelError(refusal.format(function=function)) from None


# Not named `_runtime`: that is the submodule, and importing it would overwrite a global of that name.
_instance: Runtime | None = None
_instance_lock = threading.Lock()


def _get() -> Runtime:
    global _instance
    with _instance_lock:
        if _instance is None:
            from ._loading.runtime import Runtime

            _instance = Runtime(resources.files(__name__), __name__.rpartition(".")[0] or __name__)
        return _instance


def model_names() -> list[str]:
    """Names of the encrypted models in this package (single IRs and folder models)."""
    return _get().model_names()


def read_model(name: str, part: str | None = None) -> ov.Model:
    """Decrypt a model in memory and return it as an openvino.Model whose weights OpenVINO owns.

    `part` picks one IR of a folder model by its path without `.xml` (for example "openvino_tokenizer");
    by default the model's main IR. Raises ModelNotFoundError for an unknown model or part.
    """
    return _get().read_model(name, part)


def compile_model(
    name: str,
    device: str = "CPU",
    config: dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    *,
    part: str | None = None,
) -> ov.CompiledModel:
    """Decrypt and compile a model; cached per (name, part, device, config). Thread-safe: one compile per key.

    `cache_dir` (or $OVCRYPT_CACHE_DIR) turns on the encrypted compiled-model cache for warm starts.
    An unknown or unavailable device raises DeviceError before anything is decrypted.
    """
    return _get().compile_model(name, device, config, cache_dir, part)


def read_file(name: str, path: str) -> bytes:
    """Any file of a model, by its path inside the model folder (e.g. "tokenizer_config.json"), decrypted in memory."""
    return _get().read_file(name, path)


def tokenizer(name: str, **properties: Any) -> openvino_genai.Tokenizer:
    """The tokenizer of a folder model (its tokenizer and detokenizer IRs), built in memory on CPU with `properties`
    (OpenVINO's plaintext cache options are refused: UnsafeConfigError)."""
    with _shipped(_NO_PIPELINES, "tokenizer"):
        from ._pipelines.genai import tokenizer as build

    return build(_get(), name, "CPU", properties)


def generation_config(name: str) -> openvino_genai.GenerationConfig:
    """The folder model's generation_config.json as an openvino_genai.GenerationConfig."""
    with _shipped(_NO_PIPELINES, "generation_config"):
        from ._pipelines.genai import generation_config as build

    return build(_get(), name)


def llm_pipeline(
    name: str,
    device: str = "CPU",
    *,
    draft: str | None = None,
    adapters: str | Sequence[str] | Mapping[str, float] | None = None,
    **properties: Any,
) -> openvino_genai.LLMPipeline:
    """An openvino_genai.LLMPipeline built from the decrypted folder in memory, with its generation_config.json
    and chat template. `draft`: another llm model of this package as the draft model (speculative decoding).
    `adapters`: LoRA adapters of this package (kind "adapter") by name, or {name: alpha}. `scheduler_config=`
    among the properties makes it a continuous-batching pipeline."""
    with _shipped(_NO_PIPELINES, "llm_pipeline"):
        from ._pipelines.genai import llm_pipeline as build

    return build(_get(), name, device, properties, draft=draft, adapters=adapters)


def vlm_pipeline(name: str, device: str = "CPU", **properties: Any) -> openvino_genai.VLMPipeline:
    """An openvino_genai.VLMPipeline built from the decrypted folder in memory (configs in a memory folder)."""
    with _shipped(_NO_PIPELINES, "vlm_pipeline"):
        from ._pipelines.genai import vlm_pipeline as build

    return build(_get(), name, device, properties)


def text2image_pipeline(
    name: str, device: str = "CPU", *, adapters: str | Sequence[str] | Mapping[str, float] | None = None,
    **properties: Any,
) -> openvino_genai.Text2ImagePipeline:  # fmt: skip
    """An openvino_genai.Text2ImagePipeline built from the decrypted folder's components in memory, for every
    family openvino-genai builds (SD 1.x/2.x, LCM, SDXL, SD3, Flux); `adapters` as for llm_pipeline."""
    with _shipped(_NO_PIPELINES, "text2image_pipeline"):
        from ._pipelines.genai import text2image_pipeline as build

    return build(_get(), name, device, properties, adapters=adapters)


def image2image_pipeline(
    name: str, device: str = "CPU", *, adapters: str | Sequence[str] | Mapping[str, float] | None = None,
    **properties: Any,
) -> openvino_genai.Image2ImagePipeline:  # fmt: skip
    """An openvino_genai.Image2ImagePipeline built from the decrypted folder's components in memory."""
    with _shipped(_NO_PIPELINES, "image2image_pipeline"):
        from ._pipelines.genai import image2image_pipeline as build

    return build(_get(), name, device, properties, adapters=adapters)


def inpainting_pipeline(
    name: str, device: str = "CPU", *, adapters: str | Sequence[str] | Mapping[str, float] | None = None,
    **properties: Any,
) -> openvino_genai.InpaintingPipeline:  # fmt: skip
    """An openvino_genai.InpaintingPipeline built from the decrypted folder's components in memory (Flux Fill too)."""
    with _shipped(_NO_PIPELINES, "inpainting_pipeline"):
        from ._pipelines.genai import inpainting_pipeline as build

    return build(_get(), name, device, properties, adapters=adapters)


def whisper_pipeline(name: str, device: str = "CPU", **properties: Any) -> openvino_genai.WhisperPipeline:
    """An openvino_genai.WhisperPipeline over the model decrypted into a folder of sealed memory files (Linux;
    openvino-genai builds it only from a path)."""
    with _shipped(_NO_PIPELINES, "whisper_pipeline"):
        from ._pipelines.genai import whisper_pipeline as build

    return build(_get(), name, device, properties)


def text2speech_pipeline(name: str, device: str = "CPU", **properties: Any) -> openvino_genai.Text2SpeechPipeline:
    """An openvino_genai.Text2SpeechPipeline over the model decrypted into a folder of sealed memory files."""
    with _shipped(_NO_PIPELINES, "text2speech_pipeline"):
        from ._pipelines.genai import text2speech_pipeline as build

    return build(_get(), name, device, properties)


def text_embedding_pipeline(
    name: str, device: str = "CPU", config: openvino_genai.TextEmbeddingPipeline.Config | None = None,
    **properties: Any,
) -> openvino_genai.TextEmbeddingPipeline:  # fmt: skip
    """An openvino_genai.TextEmbeddingPipeline over the model decrypted into a folder of sealed memory files."""
    with _shipped(_NO_PIPELINES, "text_embedding_pipeline"):
        from ._pipelines.genai import text_embedding_pipeline as build

    return build(_get(), name, device, properties, config=config)


def text_rerank_pipeline(
    name: str, device: str = "CPU", config: openvino_genai.TextRerankPipeline.Config | None = None,
    **properties: Any,
) -> openvino_genai.TextRerankPipeline:  # fmt: skip
    """An openvino_genai.TextRerankPipeline over the model decrypted into a folder of sealed memory files."""
    with _shipped(_NO_PIPELINES, "text_rerank_pipeline"):
        from ._pipelines.genai import text_rerank_pipeline as build

    return build(_get(), name, device, properties, config=config)


def text2video_pipeline(name: str, device: str = "CPU", **properties: Any) -> openvino_genai.Text2VideoPipeline:
    """An openvino_genai.Text2VideoPipeline over the model decrypted into a folder of sealed memory files."""
    with _shipped(_NO_PIPELINES, "text2video_pipeline"):
        from ._pipelines.genai import text2video_pipeline as build

    return build(_get(), name, device, properties)


def continuous_batching_pipeline(
    name: str,
    device: str = "CPU",
    scheduler_config: openvino_genai.SchedulerConfig | None = None,
    *,
    tokenizer_properties: dict[str, Any] | None = None,
    vision_encoder_properties: dict[str, Any] | None = None,
    **properties: Any,
) -> openvino_genai.ContinuousBatchingPipeline:
    """An openvino_genai.ContinuousBatchingPipeline over the model (llm or vlm) decrypted into a folder of sealed
    memory files; `scheduler_config` defaults to SchedulerConfig()."""
    with _shipped(_NO_PIPELINES, "continuous_batching_pipeline"):
        from ._pipelines.genai import continuous_batching_pipeline as build

    return build(
        _get(), name, device, properties, scheduler_config=scheduler_config,
        tokenizer_properties=tokenizer_properties, vision_encoder_properties=vision_encoder_properties,
    )  # fmt: skip


@contextmanager
def memory_folder(name: str) -> Iterator[Path]:
    """The whole decrypted model `name` as a folder path, for a loader that takes only a path (a newer
    openvino-genai class, optimum-intel, your own):

        with memory_folder("listener") as path:
            pipe = openvino_genai.WhisperPipeline(str(path), "CPU")

    Guarantees (Linux): every file is a sealed anonymous memory file (memfd: F_SEAL_WRITE|GROW|SHRINK|SEAL, so
    nobody can change a byte once it has a path), filled a segment at a time with what authenticated (the
    weights are one copy); the folder (mode 0700) holds only links to /proc/self/fd/N, which only this process
    can follow (a subprocess cannot open them), and it and the links are removed when the block ends: use the
    path only inside it (what a loader mapped stays valid). Nothing decrypted is ever written to a disk-backed file.
    Raises UnsupportedModelError where the platform has no memory files (Windows, macOS)."""
    with _shipped(_NO_PIPELINES, "memory_folder"):
        from ._pipelines.genai import decrypted_folder

    rt = _get()
    rt.files.model(name)  # ModelNotFoundError before anything else
    with decrypted_folder(rt, name, f"memory_folder({name!r}) gives the decrypted model a path") as path:
        yield path


@forget_keys
def set_key(key: KeyLike) -> str:
    """Offer a key (32 bytes, or 64 hex characters). May be called again to offer more; returns the key id."""
    return _get().keyring.add(key)


def harden_process() -> bool:
    """Opt-in, Linux: make this process non-dumpable (prctl(PR_SET_DUMPABLE, 0)), so other processes of the same
    user cannot read its memory or its memory files through /proc/<pid>/mem and /proc/<pid>/fd, nor attach a
    debugger, and no core dump is written. Costs exactly that for debugging too (docs/SECURITY.md). Call it
    before the first model is loaded. Returns True when in force, False where the platform has no such setting.
    """
    from ._hardening import harden_process as harden

    return harden()


def allow_config_files(allow: bool = True) -> None:
    """Opt-in for Windows and macOS, which have no files that live only in memory: let the GenAI pipelines that
    openvino-genai configures only from files (VLM, image generation) get a private folder on disk holding the
    model's decrypted JSON and text configs, never an IR or weights, for the time it takes to build the pipeline,
    then deleted. The same as OVCRYPT_ALLOW_CONFIG_FILES=1. Without it those pipelines raise UnsupportedModelError
    there; on Linux nothing changes (memory files)."""
    with _shipped(_NO_PIPELINES, "allow_config_files"):
        from ._pipelines.memfiles import allow_config_files as opt_in

    opt_in(allow)


def set_key_provider(provider: KeyProvider | None) -> None:
    """Register a callable asked for a key id (hex) that returns the key, or None when it has none."""
    _get().keyring.set_provider(provider)


@forget_keys
def load_openssl_model(
    xml_path: str | Path, key: bytes | str, iv: bytes | str, *, bin_path: str | Path | None = None
) -> ov.Model:
    """Load a pair encrypted with the OpenSSL recipe (`openssl enc -aes-128-cbc -K .. -iv ..`), in memory.

    `key` and `iv` are 16 bytes, or 32 hex characters each. Padding is checked and the .xml must
    decrypt to IR, so a wrong key is a clear error; CBC cannot detect a modified .bin.
    """
    with _shipped(_NO_OPENSSL, "load_openssl_model"):
        from ._loading.openssl import load_openssl_model as load
        from ._loading.openssl import parse_hex16

    key = parse_hex16(key, "key") if isinstance(key, str) else key
    iv = parse_hex16(iv, "iv") if isinstance(iv, str) else iv
    return load(xml_path, key, iv, bin_path=bin_path)


def unload(name: str | None = None) -> None:
    """Drop cached compiled models and pipelines (one model's, or all) so their memory can be freed."""
    _get().unload(name)
    with _attributes_lock:
        for attribute in [a for a in _attributes if name is None or a == name]:
            del _attributes[attribute]


# `from <package>._ovcrypt import detector`: each model is also an attribute, built once on first access.
_ATTRIBUTE_BUILDERS: dict[str, Callable[[str], Any]] = {
    "ir": compile_model, "llm": llm_pipeline, "vlm": vlm_pipeline, "text2image": text2image_pipeline,
    "whisper": whisper_pipeline, "text2speech": text2speech_pipeline, "text_embedding": text_embedding_pipeline,
    "text_rerank": text_rerank_pipeline, "text2video": text2video_pipeline,
}  # fmt: skip
_attributes: dict[str, Any] = {}
_attributes_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    """A model by its name, as an attribute of this module: a single IR is its compiled model (CPU, default
    config), a folder model its GenAI pipeline (kind "files" has none: use read_model or read_file). Built on
    first access and then kept; importing this module still decrypts nothing. Names of the functions above
    win over model names, and names starting with `_` are never models here."""
    if name.startswith("_"):  # submodules (`from . import _settings` asks here first) and dunders
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        known = name in _get().files.manifest.models
    except ManifestError as exc:  # hasattr() and introspection expect AttributeError
        raise AttributeError(f"module {__name__!r} has no attribute {name!r} ({exc})") from None
    if not known:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    kind = _get().files.model(name).kind
    if kind not in _ATTRIBUTE_BUILDERS:
        raise AttributeError(
            f"model {name!r} is a folder of files (kind {kind!r}): reach it with read_model/compile_model(part=...) "
            "or read_file"
        )
    with _attributes_lock:
        if name not in _attributes:
            _attributes[name] = _ATTRIBUTE_BUILDERS[kind](name)
        return _attributes[name]
