"""What kind of exported model a folder holds, told from its files (the README's "Folder models" says how).

A kind names what the runtime builds from the folder in memory: `llm` (LLMPipeline), `vlm`
(VLMPipeline), `text2image` (Text2ImagePipeline), or `files` (any folder: its IRs through
read_model/compile_model(part=...), its other files through read_file). Exports whose openvino-genai
pipeline cannot be built from memory (Whisper, text embedding, rerank, speech, video in openvino-genai
2026.4) are named, so the build can say why it refuses them: the only way to run them would be to
decrypt them to disk, which this project never does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Set

TOKENIZER_IRS = {"openvino_tokenizer.xml", "openvino_detokenizer.xml"}
VLM_IRS = {"openvino_language_model.xml", "openvino_text_embeddings_model.xml", "openvino_vision_embeddings_model.xml"}
TEXT2IMAGE_FILES = {"model_index.json"}
# What each kind needs, beyond what detection looks at, for its pipeline to be built.
REQUIRED = {
    "llm": {"openvino_model.xml", *TOKENIZER_IRS},
    "vlm": {*VLM_IRS, *TOKENIZER_IRS, "config.json"},
    "text2image": {
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/openvino_tokenizer.xml",
        "tokenizer/openvino_detokenizer.xml",
        "text_encoder/openvino_model.xml",
        "text_encoder/config.json",
        "unet/openvino_model.xml",
        "unet/config.json",
        "vae_decoder/openvino_model.xml",
        "vae_decoder/config.json",
    },
    "files": set(),
}
# Exports openvino-genai 2026.4 runs only from a folder on disk, by a file that gives them away.
_PATH_ONLY = (
    (
        {"openvino_encoder_model.xml", "openvino_decoder_model.xml"},
        "a speech-recognition (Whisper) or other encoder-decoder export",
    ),
    ({"openvino_text_encoder_model.xml", "openvino_vocoder.xml"}, "a text-to-speech export"),
)
_CAUSAL_LM = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


class NotFromMemory(Exception):
    """The folder is a known export whose pipeline openvino-genai cannot build from memory."""


def detect_kind(files: Set[str], read_json: Callable[[str], object]) -> str:
    """The kind of an exported folder from its relative paths; `read_json(path)` reads one of its JSON files.

    Raises NotFromMemory with the reason when the folder is an export that openvino-genai runs only from
    disk, or one this function cannot place (the message then says how to set `kind`).
    """
    if files >= TEXT2IMAGE_FILES:
        return "text2image"
    if files >= VLM_IRS:
        return "vlm"
    for marker, what in _PATH_ONLY:
        if marker <= files:
            raise NotFromMemory(what)
    if "openvino_model.xml" in files and files >= TOKENIZER_IRS:
        config = read_json("config.json") if "config.json" in files else {}
        architectures = config.get("architectures") if isinstance(config, dict) else None
        if not architectures or any(str(a).endswith(_CAUSAL_LM) for a in architectures):
            return "llm"
        raise NotFromMemory(f"a {', '.join(map(str, architectures))} export (text embedding, rerank or classification)")
    raise NotFromMemory("not an export this version recognises (no openvino_model.xml with tokenizer IRs, "
                        "no VLM IRs, no model_index.json)")  # fmt: skip


def missing_files(kind: str, files: Set[str]) -> list[str]:
    """The files `kind` needs that the folder lacks, sorted."""
    return sorted(REQUIRED[kind] - files)


def json_reader(read: Callable[[str], bytes]) -> Callable[[str], object]:
    """A `read_json` for detect_kind over a function that reads a file's bytes; invalid JSON reads as {}."""

    def read_json(path: str) -> object:
        try:
            return json.loads(read(path))
        except ValueError:
            return {}

    return read_json
