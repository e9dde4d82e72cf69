"""OpenVINO GenAI pipelines built from a folder model decrypted in memory.

Each IR is decrypted into memory that an OpenVINO tensor owns and handed to openvino-genai's "from
memory" constructors (the shapes of openvino.genai's own encrypted-model samples): one copy of the
weights, nothing decrypted on disk. Unlike those samples, the JSON configs are decrypted too; where
openvino-genai insists on reading a config from a path, it gets a private memory-backed folder
(`_memfiles`) that is removed as soon as the object is built.

Built from memory, openvino-genai does not read `generation_config.json` (it would fall back to
defaults such as an unbounded max_new_tokens), so every pipeline gets the folder's own file as its
GenerationConfig. The chat template and the special-token ids travel inside the tokenizer IR.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .._errors import UnsupportedModelError
from .._format.spec import forget_keys
from .._loading.loader import owning_tensor
from .._loading.runtime import refuse_unsafe_options
from .memfiles import memory_folder

if TYPE_CHECKING:
    import openvino as ov
    import openvino_genai

    from .._loading.runtime import Runtime

GENERATION_CONFIG = "generation_config.json"
TOKENIZER, DETOKENIZER = "openvino_tokenizer", "openvino_detokenizer"
# VLMPipeline's names for a VLM export's IRs are the file stems without "openvino_" and "_model".
_VLM_PREFIX, _VLM_SUFFIX = "openvino_", "_model"
# Image-generation pipelines by the diffusers class named in model_index.json, and their factory.
_TEXT2IMAGE_FACTORIES = {
    "StableDiffusionPipeline": "stable_diffusion",
    "LatentConsistencyModelPipeline": "latent_consistency_model",
}


_B = TypeVar("_B", bound=Callable[..., Any])
# Every object a product can build from a folder model, by its builder's name: each went through `builder`.
BUILDERS: dict[str, Callable[..., Any]] = {}


def builder(*kinds: str) -> Callable[[_B], _B]:
    """Make `build(rt, name, device, properties)` a GenAI builder: the one gate before anything is decrypted.

    Before `build` runs: openvino-genai must import, the model must be of one of `kinds` (any, if none are
    named), no property may turn on OpenVINO's plaintext cache (UnsafeConfigError, as for compile_model), and
    the device must be one OpenVINO has here (DeviceError). An error that leaves `build` carries no frame
    holding decrypted text or weights, nor a key (forget_keys). Registered in BUILDERS, which the tests
    walk: a builder added without this gate fails them.
    """

    def wrap(build: _B) -> _B:
        what = build.__name__

        @functools.wraps(build)
        @forget_keys
        def checked(rt: Runtime, name: str, device: str, properties: dict[str, Any]) -> Any:
            genai_module()
            if kinds:
                _require_kind(rt, name, kinds, what)
            refuse_unsafe_options(properties, f"{what} property", "GenAI objects have no encrypted cache: leave it out")
            rt.check_device(device)
            return build(rt, name, device, dict(properties))

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
    """Every non-IR file of a model under `prefix`, decrypted, by its path below `prefix`."""
    files = rt.files.model(name).files
    return {
        path[len(prefix) :]: rt.read_file(name, path)
        for path in files
        if path.startswith(prefix) and not path.endswith((".xml", ".bin"))
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
    return genai.Tokenizer(tok_xml, tok_weights, detok_xml, detok_weights, **(properties or {}))


@forget_keys
def generation_config(rt: Runtime, name: str) -> openvino_genai.GenerationConfig:
    """The folder's generation_config.json as openvino-genai reads it (defaults when the folder has none)."""
    genai = genai_module()
    if GENERATION_CONFIG not in rt.files.model(name).files:
        return genai.GenerationConfig()
    with memory_folder({GENERATION_CONFIG: rt.read_file(name, GENERATION_CONFIG)}) as folder:
        return genai.GenerationConfig(str(folder / GENERATION_CONFIG))


@builder("llm")
def llm_pipeline(rt: Runtime, name: str, device: str, properties: dict[str, Any]) -> openvino_genai.LLMPipeline:
    """LLMPipeline(model, weights, tokenizer, device, generation_config) from the decrypted folder."""
    genai = genai_module()
    tok = _tokenizer(rt, name)
    config = generation_config(rt, name)
    xml, weights = ir_in_memory(rt, name, "openvino_model")
    return genai.LLMPipeline(xml, weights, tok, device, config, **properties)


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
    rt: Runtime, name: str, device: str, properties: dict[str, Any]
) -> openvino_genai.Text2ImagePipeline:
    """A Text2ImagePipeline from the decrypted folder, built from its components as openvino-genai's
    factories take them (Stable Diffusion and Latent Consistency Models)."""
    genai = genai_module()
    index = json.loads(rt.read_file(name, "model_index.json"))
    factory = _TEXT2IMAGE_FACTORIES.get(str(index.get("_class_name")))
    if factory is None:
        raise UnsupportedModelError(
            f"model {name!r} is a {index.get('_class_name')!r}; text2image_pipeline builds "
            f"{', '.join(_TEXT2IMAGE_FACTORIES)} from memory"
        )
    with memory_folder(_configs(rt, name)) as folder:
        scheduler = genai.Scheduler.from_config(str(folder / "scheduler" / "scheduler_config.json"))
        clip_tokenizer = _tokenizer(rt, name, "tokenizer/")
        text_encoder = genai.CLIPTextModel(
            *ir_in_memory(rt, name, "text_encoder/openvino_model"),
            genai.CLIPTextModel.Config(str(folder / "text_encoder" / "config.json")),
            clip_tokenizer,
        )
        vae_config = genai.AutoencoderKL.Config(str(folder / "vae_decoder" / "config.json"))
        vae = genai.AutoencoderKL(*ir_in_memory(rt, name, "vae_decoder/openvino_model"), vae_config)
        unet = genai.UNet2DConditionModel(
            *ir_in_memory(rt, name, "unet/openvino_model"),
            genai.UNet2DConditionModel.Config(str(folder / "unet" / "config.json")),
            2 ** (len(vae_config.block_out_channels) - 1),
        )
    pipeline = getattr(genai.Text2ImagePipeline, factory)(scheduler, text_encoder, unet, vae)
    pipeline.compile(device, **properties)
    return pipeline
