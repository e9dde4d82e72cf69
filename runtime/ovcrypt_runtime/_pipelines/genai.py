"""OpenVINO GenAI pipelines built from a folder model decrypted in memory.

Two routes, never a decrypted byte on a disk-backed file:
- **From memory** wherever openvino-genai takes `(xml, weights Tensor)`: LLMPipeline (continuous batching
  too, with `scheduler_config`), VLMPipeline, the image pipelines' factories and their components, Tokenizer,
  a LoRA Adapter(Tensor). Each IR is decrypted into memory that an OpenVINO tensor owns: one copy of the weights.
  The configs those constructors still read from a path (VLMPipeline's config folder, the image components'
  Config(path) and Scheduler.from_config) get a private folder of sealed memory files (`memfiles`), removed as
  soon as the object is built; `generation_config.json` needs none (`genconfig`).
- **Through a memory folder of the whole model** where openvino-genai takes only a path (WhisperPipeline,
  Text2SpeechPipeline, TextEmbeddingPipeline, TextRerankPipeline, Text2VideoPipeline,
  ContinuousBatchingPipeline, draft_model): every file, IRs included, is decrypted a segment at a time into a
  sealed memory file (MemoryFolder.written, _format/into_file.py) that OpenVINO maps: again one copy of the
  weights. Where the platform has no memory files, this route refuses (UnsupportedModelError naming the
  platform and the reason).

Built from memory, openvino-genai reads neither `generation_config.json` nor the chat-template files beside the
tokenizer: the runtime applies both exactly as the folder constructors would (`genconfig`, `chat`).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import UnsupportedModelError
from .._format.spec import forget_keys
from .._loading.loader import owning_tensor
from .._loading.runtime import refuse_unsafe_options
from .chat import CHAT_TEMPLATE_FILES, chat_template_of, template_in_ir
from .genconfig import generation_config_from_json
from .imageconfigs import config_from_json, needs_file
from .memfiles import CONFIG_SUFFIXES, MemoryFolder, memory_folder

if TYPE_CHECKING:
    import openvino as ov
    import openvino_genai

    from .._loading.runtime import Runtime

# adapters=: one adapter's model name, several, or each with its alpha (LoRA weight)
Adapters = str | Sequence[str] | Mapping[str, float]

GENERATION_CONFIG = "generation_config.json"
TOKENIZER, DETOKENIZER = "openvino_tokenizer", "openvino_detokenizer"
# VLMPipeline's names for a VLM export's IRs are the file stems without "openvino_" and "_model".
_VLM_PREFIX, _VLM_SUFFIX = "openvino_", "_model"
# Image-generation pipelines by the diffusers class named in model_index.json, and the openvino-genai factory
# that builds each (as openvino-genai's folder constructors map them: src/cpp/src/image_generation/).
IMAGE_FAMILIES = {
    "StableDiffusionPipeline": "stable_diffusion",
    "StableDiffusionImg2ImgPipeline": "stable_diffusion",
    "StableDiffusionInpaintPipeline": "stable_diffusion",
    "LatentConsistencyModelPipeline": "latent_consistency_model",
    "StableDiffusionXLPipeline": "stable_diffusion_xl",
    "StableDiffusionXLImg2ImgPipeline": "stable_diffusion_xl",
    "StableDiffusionXLInpaintPipeline": "stable_diffusion_xl",
    "StableDiffusion3Pipeline": "stable_diffusion_3",
    "StableDiffusion3Img2ImgPipeline": "stable_diffusion_3",
    "StableDiffusion3InpaintPipeline": "stable_diffusion_3",
    "FluxPipeline": "flux",
    "FluxImg2ImgPipeline": "flux",
    "FluxInpaintPipeline": "flux",
    "FluxFillPipeline": "flux_fill",
}
ADAPTER_SUFFIX = ".safetensors"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
# Which component class reads each sub-folder's config.json (the rest need no config).
_COMPONENT_OF = {"vae_decoder": "AutoencoderKL", "transformer": "FluxTransformer2DModel"}


_B = TypeVar("_B", bound=Callable[..., Any])
# Every object a product can build from a folder model, by its builder's name: each went through `builder`.
BUILDERS: dict[str, Callable[..., Any]] = {}


def builder(*kinds: str) -> Callable[[_B], _B]:
    """Make `build(rt, name, device, properties, **options)` a GenAI builder: the one gate before anything is decrypted.

    Before `build` runs: openvino-genai must import, the model must be of one of `kinds` (any, if none are
    named), no property (nor one of a mapping among `options`) may turn on OpenVINO's plaintext cache
    (UnsafeConfigError, as for compile_model), and
    the device must be one OpenVINO has here (DeviceError). An error that leaves `build` carries no frame
    holding decrypted text or weights, nor a key (forget_keys). Registered in BUILDERS, which the tests
    walk: a builder added without this gate fails them.
    """

    def wrap(build: _B) -> _B:
        what = build.__name__

        @functools.wraps(build)
        @forget_keys
        def checked(rt: Runtime, name: str, device: str, properties: dict[str, Any], **options: Any) -> Any:
            genai_module()
            if kinds:
                _require_kind(rt, name, kinds, what)
            refuse_unsafe_options(properties, f"{what} property", "GenAI objects have no encrypted cache: leave it out")
            for option, value in options.items():  # tokenizer_properties=, vision_encoder_properties=...
                if isinstance(value, Mapping):
                    refuse_unsafe_options(value, f"{what} {option}", "GenAI objects have no encrypted cache")
            rt.check_device(device)
            return build(rt, name, device, dict(properties), **options)

        BUILDERS[what] = checked
        return checked  # type: ignore[return-value]

    return wrap


def genai_module() -> Any:
    """openvino_genai, or UnsupportedModelError saying what to install."""
    try:
        import openvino_genai
    except ImportError as exc:
        raise UnsupportedModelError(
            f"GenAI pipelines need the openvino-genai package, which cannot be imported ({exc}); "
            "install the openvino-genai release that matches your openvino"
        ) from None
    return openvino_genai


def _require_kind(rt: Runtime, name: str, kinds: tuple[str, ...], what: str) -> None:
    kind = rt.files.model(name).kind
    if kind not in kinds:
        wanted = " or ".join(kinds)
        raise UnsupportedModelError(f"model {name!r} is of kind {kind!r}; {what} needs a model of kind {wanted}")


def ir_in_memory(rt: Runtime, name: str, part: str) -> tuple[str, ov.Tensor]:
    """One IR of a model as openvino-genai takes it: the XML text and a weights tensor that owns its memory."""
    xml, weights = rt.decrypt_ir(name, part)
    try:
        text = xml.tobytes().decode()
    finally:
        xml.fill(0)
    return text, owning_tensor(weights)


def _configs(rt: Runtime, name: str, prefix: str = "") -> dict[str, bytes]:
    """Every config of a model under `prefix` (CONFIG_SUFFIXES: JSON, text, templates), decrypted, by its path
    below `prefix`. Only configs: what openvino-genai reads from these folders, and all that the opt-in for
    platforms without memory files may write (a SentencePiece model or a README is neither)."""
    files = rt.files.model(name).files
    return {
        path[len(prefix) :]: rt.read_file(name, path)
        for path in files
        if path.startswith(prefix) and path.lower().endswith(CONFIG_SUFFIXES)
    }


@builder()
def tokenizer(rt: Runtime, name: str, device: str, properties: dict[str, Any]) -> openvino_genai.Tokenizer:
    """The model's tokenizer and detokenizer IRs as one openvino_genai.Tokenizer, built in memory on `device`
    (openvino-genai compiles tokenizers on CPU; it is checked all the same) with `properties`."""
    return _tokenizer(rt, name, properties=properties)


def _tokenizer(
    rt: Runtime, name: str, prefix: str = "", properties: dict[str, Any] | None = None
) -> openvino_genai.Tokenizer:
    """The tokenizer and detokenizer IRs under `prefix`; for builders, which have checked everything already."""
    genai = genai_module()  # openvino_genai.Tokenizer loads the tokenizers' extension itself: no import needed
    parts = rt.files.model(name).parts(name)
    missing = [p for p in (prefix + TOKENIZER, prefix + DETOKENIZER) if p not in parts]
    if missing:
        raise UnsupportedModelError(
            f"model {name!r} has no {' or '.join(m + '.xml' for m in missing)}; openvino-genai builds a tokenizer "
            "from memory only from both (export the model with openvino-tokenizers)"
        )
    tok_xml, tok_weights = ir_in_memory(rt, name, prefix + TOKENIZER)
    detok_xml, detok_weights = ir_in_memory(rt, name, prefix + DETOKENIZER)
    in_ir = template_in_ir(tok_xml.encode())
    tok = genai.Tokenizer(tok_xml, tok_weights, detok_xml, detok_weights, **(properties or {}))
    if not in_ir:
        apply_folder_template(rt, name, tok, prefix)
    return tok


def apply_folder_template(rt: Runtime, name: str, tok: openvino_genai.Tokenizer, prefix: str = "") -> None:
    """Give `tok` the chat template openvino-genai's folder constructor would find in the files beside the
    tokenizer under `prefix` (for a tokenizer IR without one of its own); no template, no change."""
    files = rt.files.model(name).files
    found = chat_template_of({prefix + f: rt.read_file(name, prefix + f) for f in CHAT_TEMPLATE_FILES
                              if prefix + f in files}, prefix)  # fmt: skip
    if found is not None:
        tok.set_chat_template(found[0])


@forget_keys
def generation_config(rt: Runtime, name: str) -> openvino_genai.GenerationConfig:
    """The folder's generation_config.json as openvino-genai reads it (defaults when the folder has none),
    built from the parsed JSON with no file."""
    genai = genai_module()
    if GENERATION_CONFIG not in rt.files.model(name).files:
        return genai.GenerationConfig()
    try:  # no file needed: openvino-genai's own rules for the JSON (_genconfig), so this works on every platform
        return generation_config_from_json(genai, rt.read_file(name, GENERATION_CONFIG))
    except ValueError as exc:
        raise UnsupportedModelError(f"model {name!r}: {exc}; openvino-genai cannot read it either") from None


@builder("llm")
def llm_pipeline(
    rt: Runtime, name: str, device: str, properties: dict[str, Any], draft: str | None = None,
    adapters: Adapters | None = None,
) -> openvino_genai.LLMPipeline:  # fmt: skip
    """LLMPipeline(model, weights, tokenizer, device, generation_config) from the decrypted folder.

    `draft`: another llm model of the package as the draft model of speculative decoding (openvino-genai's
    Python draft_model() takes only a path: the draft goes through a memory folder). `adapters`: LoRA adapters
    (models of kind "adapter") as LLMPipeline's `adapters=`. `scheduler_config` among `properties` makes it a
    continuous-batching pipeline, from memory.
    """
    genai = genai_module()
    if draft is not None:
        _require_kind(rt, draft, ("llm",), "draft=")
    adapter_names = _adapter_names(rt, adapters)
    tok = _tokenizer(rt, name)
    config = generation_config(rt, name)
    if adapter_names:
        properties["adapters"] = _adapter_config(rt, adapter_names)
    xml, weights = ir_in_memory(rt, name, "openvino_model")
    if draft is None:
        return genai.LLMPipeline(xml, weights, tok, device, config, **properties)
    with decrypted_folder(rt, draft, _path_only("draft_model()")) as path:
        properties["draft_model"] = genai.draft_model(str(path), device)
        return genai.LLMPipeline(xml, weights, tok, device, config, **properties)


def _adapter_names(rt: Runtime, adapters: Adapters | None) -> dict[str, float]:
    """adapters= as {model name: alpha}, each checked to be an adapter (before anything is decrypted)."""
    if adapters is None:
        return {}
    if isinstance(adapters, str):
        named = {adapters: 1.0}
    elif isinstance(adapters, Mapping):
        named = {str(k): float(v) for k, v in adapters.items()}
    else:
        named = dict.fromkeys(map(str, adapters), 1.0)
    for adapter in named:
        _require_kind(rt, adapter, ("adapter",), "adapters=")
    return named


def _adapter_config(rt: Runtime, named: Mapping[str, float]) -> openvino_genai.AdapterConfig:
    """An AdapterConfig of LoRA adapters, each an Adapter(Tensor) over its decrypted .safetensors (one copy)."""
    genai = genai_module()
    config = genai.AdapterConfig()
    for adapter, alpha in named.items():
        tensors = [p for p in rt.files.model(adapter).files if p.endswith(ADAPTER_SUFFIX)]
        if len(tensors) != 1:
            raise UnsupportedModelError(f"adapter {adapter!r} holds {len(tensors)} .safetensors files, not one")
        config.add(genai.Adapter(owning_tensor(rt.files.decrypt(adapter, tensors[0]))), alpha)
    return config


def _path_only(what: str) -> str:
    return f"openvino-genai builds {what} only from a folder path, so the whole model is given as memory files"


@contextlib.contextmanager
def decrypted_folder(rt: Runtime, name: str, why: str) -> Iterator[Path]:
    """The path of a folder holding every file of model `name`, each decrypted straight into a sealed memory
    file (no second copy); the folder and its links are gone when the block ends (mapped pages stay with their
    users). UnsupportedModelError, starting with `why`, where the platform has no memory files."""
    with MemoryFolder(why) as folder:
        for path in sorted(rt.files.model(name).files):
            rt.files.decrypt_to_folder(name, path, folder)
        yield folder.path


@builder("vlm")
def vlm_pipeline(rt: Runtime, name: str, device: str, properties: dict[str, Any]) -> openvino_genai.VLMPipeline:
    """VLMPipeline(models, tokenizer, config folder, device, generation_config) from the decrypted folder.

    Every IR except the tokenizers is passed by its VLMPipeline name (`openvino_language_model` ->
    "language"); the configs VLMPipeline reads from `config_dir_path` live in a memory folder.
    """
    genai = genai_module()
    tok = _tokenizer(rt, name)
    config = generation_config(rt, name)
    models = {
        _vlm_name(part): ir_in_memory(rt, name, part)
        for part in rt.files.model(name).parts(name)
        if "/" not in part and part not in (TOKENIZER, DETOKENIZER)
    }
    with memory_folder(_configs(rt, name)) as folder:
        return genai.VLMPipeline(models, tok, str(folder), device, generation_config=config, **properties)


def _vlm_name(part: str) -> str:
    return part.removeprefix(_VLM_PREFIX).removesuffix(_VLM_SUFFIX)


@builder("text2image")
def text2image_pipeline(
    rt: Runtime, name: str, device: str, properties: dict[str, Any], adapters: Adapters | None = None
) -> openvino_genai.Text2ImagePipeline:
    """A Text2ImagePipeline from the decrypted folder, built from its components in memory with the factory of
    its family (model_index.json's _class_name: SD 1.x/2.x, LCM, SDXL, SD3, Flux)."""
    return _image_pipeline(rt, name, device, properties, "Text2ImagePipeline", adapters)


@builder("text2image")
def image2image_pipeline(
    rt: Runtime, name: str, device: str, properties: dict[str, Any], adapters: Adapters | None = None
) -> openvino_genai.Image2ImagePipeline:
    """An Image2ImagePipeline from the decrypted folder (as text2image_pipeline; the VAE encoder too)."""
    return _image_pipeline(rt, name, device, properties, "Image2ImagePipeline", adapters)


@builder("text2image")
def inpainting_pipeline(
    rt: Runtime, name: str, device: str, properties: dict[str, Any], adapters: Adapters | None = None
) -> openvino_genai.InpaintingPipeline:
    """An InpaintingPipeline from the decrypted folder (as text2image_pipeline; Flux Fill too)."""
    return _image_pipeline(rt, name, device, properties, "InpaintingPipeline", adapters)


def _needs_config_file(path: str, data: bytes) -> bool:
    """Whether a component's config.json sets a field Python cannot set (_imageconfigs.UNEXPOSED); an SD3
    transformer's config has no guidance_embeds, so checking it as Flux's finds nothing."""
    sub = path.rpartition("/")[0]
    return path.endswith("/config.json") and sub in _COMPONENT_OF and needs_file(_COMPONENT_OF[sub], data)


def _image_pipeline(
    rt: Runtime, name: str, device: str, properties: dict[str, Any], cls_name: str, adapters: Adapters | None
) -> Any:
    genai = genai_module()
    cls = getattr(genai, cls_name)
    index = json.loads(rt.read_file(name, "model_index.json"))
    class_name = str(index.get("_class_name"))
    factory = IMAGE_FAMILIES.get(class_name)
    if factory is None or not hasattr(cls, factory):
        built = sorted(c for c, f in IMAGE_FAMILIES.items() if hasattr(cls, f))
        raise UnsupportedModelError(
            f"model {name!r} is a {class_name!r}; openvino-genai's {cls_name} builds {', '.join(built)} from memory"
        )
    adapter_names = _adapter_names(rt, adapters)
    files = rt.files.model(name).files

    def ir(sub: str) -> tuple[str, ov.Tensor]:
        return ir_in_memory(rt, name, f"{sub}/openvino_model")

    # Component configs from the `{}` stub and setters (_imageconfigs); the scheduler's (Scheduler.from_config)
    # and those setting a field Python cannot set go through a memory folder.
    configs = _configs(rt, name)
    with_files = {path: data for path, data in configs.items()
                  if path == SCHEDULER_CONFIG or _needs_config_file(path, data)}  # fmt: skip
    with memory_folder(with_files) as folder:

        def config(sub: str, component: str) -> Any:
            klass = getattr(genai, component).Config
            path = f"{sub}/config.json"
            if path in with_files:
                return klass(str(folder / path))
            return config_from_json(klass, component, configs[path])

        def clip(sub: str, tokenizer: str, klass: Any) -> Any:
            return klass(*ir(sub), config(sub, "CLIPTextModel"), _tokenizer(rt, name, f"{tokenizer}/"))

        def t5(sub: str, tokenizer: str) -> Any:
            return genai.T5EncoderModel(*ir(sub), _tokenizer(rt, name, f"{tokenizer}/"))

        scheduler = genai.Scheduler.from_config(str(folder / SCHEDULER_CONFIG))
        vae_config = config("vae_decoder", "AutoencoderKL")
        scale = 2 ** (len(vae_config.block_out_channels) - 1)
        encoder = cls_name != "Text2ImagePipeline" and "vae_encoder/openvino_model.xml" in files
        vae = genai.AutoencoderKL(*(ir("vae_encoder") if encoder else ()), *ir("vae_decoder"), vae_config)
        args: list[Any]
        if factory in ("stable_diffusion", "latent_consistency_model", "stable_diffusion_xl"):
            unet = genai.UNet2DConditionModel(*ir("unet"), config("unet", "UNet2DConditionModel"), scale)
            args = [clip("text_encoder", "tokenizer", genai.CLIPTextModel)]
            if factory == "stable_diffusion_xl":
                args.append(clip("text_encoder_2", "tokenizer_2", genai.CLIPTextModelWithProjection))
            args.append(unet)
        elif factory == "stable_diffusion_3":
            transformer = genai.SD3Transformer2DModel(
                *ir("transformer"), config("transformer", "SD3Transformer2DModel"), scale
            )
            args = [clip("text_encoder", "tokenizer", genai.CLIPTextModelWithProjection),
                    clip("text_encoder_2", "tokenizer_2", genai.CLIPTextModelWithProjection)]  # fmt: skip
            if "text_encoder_3/openvino_model.xml" in files:
                args.append(t5("text_encoder_3", "tokenizer_3"))
            args.append(transformer)
        else:  # flux, flux_fill
            transformer = genai.FluxTransformer2DModel(
                *ir("transformer"), config("transformer", "FluxTransformer2DModel"), scale
            )
            args = [clip("text_encoder", "tokenizer", genai.CLIPTextModel), t5("text_encoder_2", "tokenizer_2"),
                    transformer]  # fmt: skip
    pipeline = getattr(cls, factory)(scheduler, *args, vae)
    if adapter_names:
        properties["adapters"] = _adapter_config(rt, adapter_names)
    pipeline.compile(device, **properties)
    return pipeline


# --- pipelines openvino-genai builds only from a path: the whole model as memory files ---------------------


def _from_path(rt: Runtime, name: str, cls: str, device: str, properties: dict[str, Any], *args: Any) -> Any:
    """openvino_genai.<cls>(path, device, *args, **properties) over the model decrypted into a memory folder: the
    one route of every pipeline that openvino-genai builds only from a path."""
    genai = genai_module()
    with decrypted_folder(rt, name, _path_only(cls)) as path:
        return getattr(genai, cls)(str(path), device, *args, **properties)


@builder("whisper")
def whisper_pipeline(rt: Runtime, name: str, device: str, properties: dict[str, Any]) -> openvino_genai.WhisperPipeline:
    """WhisperPipeline(path, device, **properties) over the model decrypted into a memory folder."""
    pipeline: openvino_genai.WhisperPipeline = _from_path(rt, name, "WhisperPipeline", device, properties)
    return pipeline


@builder("text2speech")
def text2speech_pipeline(
    rt: Runtime, name: str, device: str, properties: dict[str, Any]
) -> openvino_genai.Text2SpeechPipeline:
    """Text2SpeechPipeline(path, device, **properties) over the model decrypted into a memory folder."""
    pipeline: openvino_genai.Text2SpeechPipeline = _from_path(rt, name, "Text2SpeechPipeline", device, properties)
    return pipeline


@builder("text_embedding")
def text_embedding_pipeline(
    rt: Runtime, name: str, device: str, properties: dict[str, Any], config: Any = None
) -> openvino_genai.TextEmbeddingPipeline:
    """TextEmbeddingPipeline(path, device, config, **properties) over the model decrypted into a memory folder;
    `config` is a TextEmbeddingPipeline.Config (pooling, normalisation, instructions) or None."""
    pipeline: openvino_genai.TextEmbeddingPipeline = _from_path(
        rt, name, "TextEmbeddingPipeline", device, properties, config
    )
    return pipeline


@builder("text_rerank")
def text_rerank_pipeline(
    rt: Runtime, name: str, device: str, properties: dict[str, Any], config: Any = None
) -> openvino_genai.TextRerankPipeline:
    """TextRerankPipeline(path, device, config, **properties) over the model decrypted into a memory folder;
    `config` is a TextRerankPipeline.Config (top_n, max_length) or None."""
    pipeline: openvino_genai.TextRerankPipeline = _from_path(rt, name, "TextRerankPipeline", device, properties, config)
    return pipeline


@builder("text2video")
def text2video_pipeline(
    rt: Runtime, name: str, device: str, properties: dict[str, Any]
) -> openvino_genai.Text2VideoPipeline:
    """Text2VideoPipeline(path, device, **properties) over the model decrypted into a memory folder."""
    pipeline: openvino_genai.Text2VideoPipeline = _from_path(rt, name, "Text2VideoPipeline", device, properties)
    return pipeline


@builder("llm", "vlm")
def continuous_batching_pipeline(
    rt: Runtime, name: str, device: str, properties: dict[str, Any], scheduler_config: Any = None,
    tokenizer_properties: Mapping[str, Any] | None = None, vision_encoder_properties: Mapping[str, Any] | None = None,
) -> openvino_genai.ContinuousBatchingPipeline:  # fmt: skip
    """ContinuousBatchingPipeline(path, scheduler_config, device, properties, tokenizer_properties,
    vision_encoder_properties) over the model decrypted into a memory folder; `scheduler_config` defaults to
    SchedulerConfig(). (llm_pipeline(name, scheduler_config=...) batches continuously from memory, no folder.)"""
    genai = genai_module()
    scheduler = scheduler_config if scheduler_config is not None else genai.SchedulerConfig()
    with decrypted_folder(rt, name, _path_only("ContinuousBatchingPipeline")) as path:
        return genai.ContinuousBatchingPipeline(str(path), scheduler, device, properties,
                                                dict(tokenizer_properties or {}),
                                                dict(vision_encoder_properties or {}))  # fmt: skip
