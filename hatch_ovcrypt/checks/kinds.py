"""What kind of exported model a folder holds, told from its files (the README's "Folder models" says how).

A kind names what the runtime builds from the folder: `llm` (LLMPipeline), `vlm` (VLMPipeline), `text2image`
(Text2ImagePipeline, Image2ImagePipeline, InpaintingPipeline: SD 1.x/2.x, LCM, SDXL, SD3, Flux), `whisper`,
`text2speech`, `text_embedding`, `text_rerank`, `text2video` (pipelines openvino-genai builds only from a path:
the runtime gives them a folder of sealed memory files), `adapter` (a LoRA `.safetensors`, named by a
pipeline's `adapters=`), or `files` (any folder: its IRs through read_model/compile_model(part=...), its other
files through read_file). Detection only looks at file names and at `config.json` / `model_index.json`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Set

from ovcrypt_runtime._pipelines.chat import CHAT_TEMPLATE_FILES
from ovcrypt_runtime._pipelines.genai import (
    IMAGE_FAMILIES,  # model_index.json's `_class_name` -> openvino-genai's factory
)

TOKENIZER_IRS = {"openvino_tokenizer.xml", "openvino_detokenizer.xml"}
VLM_IRS = {"openvino_language_model.xml", "openvino_text_embeddings_model.xml", "openvino_vision_embeddings_model.xml"}
ENCODER_DECODER_IRS = {"openvino_encoder_model.xml", "openvino_decoder_model.xml"}
TEXT2IMAGE_FILES = {"model_index.json"}
ADAPTER_SUFFIX = ".safetensors"
VIDEO_CLASSES = {"LTXPipeline"}
_IMAGE_COMMON = {"model_index.json", "scheduler/scheduler_config.json", "vae_decoder/openvino_model.xml",
                 "vae_decoder/config.json", "tokenizer/openvino_tokenizer.xml", "text_encoder/openvino_model.xml",
                 "text_encoder/config.json"}  # fmt: skip
# What each kind needs, beyond what detection looks at, for its pipeline to be built.
REQUIRED: dict[str, set[str]] = {
    "llm": {"openvino_model.xml", *TOKENIZER_IRS},
    "vlm": {*VLM_IRS, *TOKENIZER_IRS, "config.json"},
    "text2image": set(_IMAGE_COMMON),
    "whisper": {*ENCODER_DECODER_IRS, *TOKENIZER_IRS},
    "text2speech": {"openvino_vocoder.xml", *TOKENIZER_IRS},
    "text_embedding": {"openvino_model.xml", "openvino_tokenizer.xml"},
    "text_rerank": {"openvino_model.xml", "openvino_tokenizer.xml"},
    "text2video": {"model_index.json"},
    "adapter": set(),
    "files": set(),
}
# The further files of each image family (its denoiser and its extra text encoders).
IMAGE_FAMILY_FILES = {
    "stable_diffusion": {"unet/openvino_model.xml", "unet/config.json"},
    "latent_consistency_model": {"unet/openvino_model.xml", "unet/config.json"},
    "stable_diffusion_xl": {"unet/openvino_model.xml", "unet/config.json", "text_encoder_2/openvino_model.xml",
                            "text_encoder_2/config.json", "tokenizer_2/openvino_tokenizer.xml"},
    "stable_diffusion_3": {"transformer/openvino_model.xml", "transformer/config.json",
                           "text_encoder_2/openvino_model.xml", "text_encoder_2/config.json",
                           "tokenizer_2/openvino_tokenizer.xml"},
    "flux": {"transformer/openvino_model.xml", "transformer/config.json", "text_encoder_2/openvino_model.xml",
             "tokenizer_2/openvino_tokenizer.xml"},
    "flux_fill": {"transformer/openvino_model.xml", "transformer/config.json", "text_encoder_2/openvino_model.xml",
                  "tokenizer_2/openvino_tokenizer.xml"},
}  # fmt: skip
# openvino-genai's class for each kind: a kind whose class the installed openvino-genai lacks is refused.
GENAI_CLASSES = {
    "llm": "LLMPipeline",
    "vlm": "VLMPipeline",
    "text2image": "Text2ImagePipeline",
    "whisper": "WhisperPipeline",
    "text2speech": "Text2SpeechPipeline",
    "text_embedding": "TextEmbeddingPipeline",
    "text_rerank": "TextRerankPipeline",
    "text2video": "Text2VideoPipeline",
    "adapter": "Adapter",
}
_CAUSAL_LM = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
_RERANK = ("ForSequenceClassification",)


class NotFromMemory(Exception):
    """The folder is an export whose pipeline the runtime cannot build (the message says what it is)."""


def detect_kind(files: Set[str], read_json: Callable[[str], object]) -> str:
    """The kind of an exported folder from its relative paths; `read_json(path)` reads one of its JSON files.

    Raises NotFromMemory with the reason when the folder is an export no kind builds, or one this function
    cannot place (the message then says how to set `kind`).
    """
    if files >= TEXT2IMAGE_FILES:
        index = read_json("model_index.json")
        name = str(index.get("_class_name")) if isinstance(index, dict) else "?"
        if name in IMAGE_FAMILIES:
            return "text2image"
        if name in VIDEO_CLASSES:
            return "text2video"
        families = ", ".join(sorted(IMAGE_FAMILIES))
        raise NotFromMemory(f"a {name!r} export (model_index.json), which no kind builds: the image classes are "
                            f"{families}, and video {', '.join(VIDEO_CLASSES)}")  # fmt: skip
    if files >= VLM_IRS:
        return "vlm"
    if is_adapter_folder(files):
        return "adapter"
    config = read_json("config.json") if "config.json" in files else {}
    config = config if isinstance(config, dict) else {}
    architectures = [str(a) for a in config.get("architectures") or []]
    model_type = str(config.get("model_type", ""))
    if "openvino_vocoder.xml" in files:
        return "text2speech"
    if files >= ENCODER_DECODER_IRS:
        if model_type == "whisper" or any(a.startswith("Whisper") for a in architectures):
            return "whisper"
        raise NotFromMemory(f"an encoder-decoder export ({', '.join(architectures) or model_type or 'unknown'}) that "
                            "openvino-genai has no pipeline for (only Whisper)")  # fmt: skip
    if "openvino_model.xml" in files and "openvino_tokenizer.xml" in files:
        if not architectures or any(a.endswith(_CAUSAL_LM) for a in architectures):
            return "llm" if files >= TOKENIZER_IRS else "text_embedding"
        if any(a.endswith(_RERANK) for a in architectures):
            return "text_rerank"
        return "text_embedding"
    raise NotFromMemory("not an export this version recognises (no openvino_model.xml with tokenizer IRs, no VLM "
                        "IRs, no Whisper or speech IRs, no model_index.json, no .safetensors adapter)")  # fmt: skip


def is_adapter_folder(files: Set[str]) -> bool:
    """A LoRA adapter as PEFT saves it: one `.safetensors` and nothing but JSON (adapter_config.json) or text."""
    tensors = [f for f in files if f.endswith(ADAPTER_SUFFIX)]
    return len(tensors) == 1 and all(f in tensors or f.endswith((".json", ".md", ".txt")) for f in files)


def missing_files(kind: str, files: Set[str], read_json: Callable[[str], object] | None = None) -> list[str]:
    """The files `kind` needs that the folder lacks, sorted."""
    needed = set(REQUIRED[kind])
    if kind == "text2image" and read_json is not None and "model_index.json" in files:
        index = read_json("model_index.json")
        family = IMAGE_FAMILIES.get(str(index.get("_class_name")) if isinstance(index, dict) else "")
        needed |= IMAGE_FAMILY_FILES.get(family or "", set())
    if kind == "adapter" and not any(f.endswith(ADAPTER_SUFFIX) for f in files):
        needed.add("a .safetensors file")
    return sorted(needed - files)


def template_files(files: Set[str], prefix: str = "") -> list[str]:
    """The files beside a tokenizer (under `prefix`) where openvino-genai's folder constructor may find a chat
    template, in the order it reads them (a later one wins; the tokenizer IR's own template beats them all)."""
    return [prefix + f for f in CHAT_TEMPLATE_FILES if prefix + f in files]


def json_reader(read: Callable[[str], bytes]) -> Callable[[str], object]:
    """A `read_json` for detect_kind over a function that reads a file's bytes; invalid JSON reads as {}."""

    def read_json(path: str) -> object:
        try:
            return json.loads(read(path))
        except ValueError:
            return {}

    return read_json
