"""Issue 21 (GenAI part): GenerationConfig from the parsed generation_config.json, with no file, by openvino-genai's
own rules (src/cpp/src/generation_config.cpp), so that llm_pipeline needs no memory file on any platform."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openvino_genai as genai
import pytest

from ovcrypt_runtime._pipelines.genconfig import generation_config_from_json
from tests.helpers import REPO

FIELDS = ["eos_token_id", "stop_token_ids", "max_new_tokens", "max_length", "min_new_tokens", "ignore_eos",
          "stop_strings", "include_stop_str_in_output", "echo", "logprobs", "repetition_penalty", "frequency_penalty",
          "presence_penalty", "num_beam_groups", "num_beams", "diversity_penalty", "length_penalty",
          "num_return_sequences", "no_repeat_ngram_size", "stop_criteria", "do_sample", "temperature", "top_p",
          "top_k", "min_p", "assistant_confidence_threshold", "num_assistant_tokens", "max_ngram_size"]  # fmt: skip
CONFIGS: list[Any] = [
    {},
    [],
    {"eos_token_id": [5, 2, 9], "max_new_tokens": 12, "do_sample": True, "temperature": 0.7, "top_k": 40,
     "top_p": 0.9, "early_stopping": "never", "stop_strings": ["a", "b"]},
    {"eos_token_id": 2, "bos_token_id": 1, "max_length": 30, "repetition_penalty": 1.1, "num_beams": 4,
     "num_beam_groups": 2, "diversity_penalty": 0.5, "early_stopping": True, "no_repeat_ngram_size": 3},
    {"eos_token_id": None, "max_new_tokens": 5.7, "ignore_eos": False, "early_stopping": False,
     "num_assistant_tokens": 3, "assistant_confidence_threshold": 0.4, "min_p": 0.1},
    {"eos_token_id": [], "stop_strings": "not a list", "transformers_version": "5.5.0", "logprobs": 3, "echo": True},
    json.loads((REPO / "tests" / "fixtures" / "tiny_llm" / "generation_config.json").read_text()),
    json.loads((REPO / "tests" / "fixtures" / "tiny_whisper" / "generation_config.json").read_text()),
]  # fmt: skip


@pytest.mark.parametrize("index", range(len(CONFIGS)))
def test_config_from_json_equals_the_one_from_the_file(tmp_path: Path, index: int) -> None:
    path = tmp_path / "generation_config.json"
    path.write_text(json.dumps(CONFIGS[index]))
    expected = genai.GenerationConfig(str(path))
    got = generation_config_from_json(genai, path.read_bytes())
    for field in FIELDS:
        assert getattr(got, field) == getattr(expected, field), field


BAD = [{"max_new_tokens": "12"}, {"do_sample": 1}, {"temperature": {"x": 1}}, {"top_k": True}]


@pytest.mark.parametrize("bad", BAD)
def test_a_field_openvino_genai_cannot_read_is_refused_as_it_is_there(tmp_path: Path, bad: Any) -> None:
    path = tmp_path / "generation_config.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(Exception):  # noqa: B017 - whatever openvino-genai raises: it refuses the file too
        genai.GenerationConfig(str(path))
    with pytest.raises(ValueError, match=r"generation_config\.json"):
        generation_config_from_json(genai, path.read_bytes())


def test_llm_pipeline_needs_no_memory_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no memfd and no tmpfs (as on Windows and macOS), an LLM folder still builds and keeps its config."""
    from hatch_ovcrypt.hook.writer import render_table
    from ovcrypt_runtime._loading.runtime import Runtime
    from ovcrypt_runtime._pipelines import genai as _genai
    from ovcrypt_runtime._pipelines import memfiles as _memfiles

    llm = REPO / "tests" / "fixtures" / "tiny_llm"
    render_table({"models": {"chat": str(llm)}}, tmp_path, tmp_path / "_ovcrypt", package="acme_vision",
                 key=bytes(32), environ={})  # fmt: skip
    rt = Runtime(tmp_path / "_ovcrypt", "acme_vision")
    rt.keyring.add(bytes(32))

    def no_memory_files(why: str = "") -> Any:
        raise AssertionError(f"a memory file was asked for: {why}")

    monkeypatch.setattr(_memfiles, "choose_backing", no_memory_files)
    pipe = _genai.llm_pipeline(rt, "chat", "CPU", {})
    assert pipe.get_generation_config().max_new_tokens == 12
    assert pipe.generate("hello") == genai.LLMPipeline(str(llm), "CPU").generate("hello")
