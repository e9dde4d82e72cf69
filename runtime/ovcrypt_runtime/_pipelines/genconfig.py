"""openvino_genai.GenerationConfig from the parsed `generation_config.json`, with no file.

openvino-genai reads the file only through `GenerationConfig(path)`; these rules are that constructor's
(src/cpp/src/generation_config.cpp and json_utils.hpp's `read_json_param`), so a config made here equals the
one made from the file, on every platform, without a memory file:
- a field is read only when present and not null; a field of the wrong JSON type for its C++ type is an
  error there (nlohmann::json's type_error), and here too (ValueError naming the field);
- `eos_token_id` may be a list: every id joins `stop_token_ids` and the first becomes `eos_token_id`;
- `stop_strings` is read only from a list; `early_stopping` maps to `stop_criteria` ("never", true, false);
- last, a set `eos_token_id` joins `stop_token_ids` (set_eos_token_id).
"""

from __future__ import annotations

import json
from typing import Any

_INTS = ("max_new_tokens", "max_length", "min_new_tokens", "logprobs", "num_beam_groups", "num_beams",
         "num_return_sequences", "no_repeat_ngram_size", "top_k", "num_assistant_tokens", "max_ngram_size",
         "branching_factor", "tree_depth")  # fmt: skip
_FLOATS = ("repetition_penalty", "frequency_penalty", "presence_penalty", "diversity_penalty", "length_penalty",
           "temperature", "top_p", "min_p", "assistant_confidence_threshold")  # fmt: skip
_BOOLS = ("ignore_eos", "include_stop_str_in_output", "echo", "do_sample")


def _number(data: dict[str, Any], name: str, kind: type) -> Any:
    """`data[name]` as nlohmann's get<int/float> reads it (numbers only; floats truncate to int)."""
    value = data[name]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return kind(value)
    if isinstance(value, (str, dict, bool)):  # read_json_param tries these, and nlohmann then throws
        raise ValueError(f"generation_config.json: {name} is {type(value).__name__}, openvino-genai reads a number")
    return None  # a list: read_json_param leaves the field unchanged


def generation_config_from_json(genai: Any, data: bytes) -> Any:
    """An openvino_genai.GenerationConfig equal to GenerationConfig(path of a file holding `data`).

    Raises ValueError for invalid JSON or a field of the wrong type (where openvino-genai fails too).
    """
    parsed = json.loads(data)
    if not isinstance(parsed, dict):  # nlohmann's contains() is false for every name: all defaults
        return genai.GenerationConfig()
    fields = {k: v for k, v in parsed.items() if v is not None}
    config = genai.GenerationConfig()
    eos = -1
    if "eos_token_id" in fields:
        value = _number(fields, "eos_token_id", int)
        eos = value if value is not None else eos
    for name in _INTS:
        if name in fields and (value := _number(fields, name, int)) is not None:
            setattr(config, name, value)
    for name in _FLOATS:
        if name in fields and (value := _number(fields, name, float)) is not None:
            setattr(config, name, value)
    for name in _BOOLS:
        if name in fields and not isinstance(fields[name], list):
            if not isinstance(fields[name], bool):
                raise ValueError(f"generation_config.json: {name} is {type(fields[name]).__name__}, openvino-genai "
                                 "reads a boolean")  # fmt: skip
            setattr(config, name, fields[name])
    if isinstance(fields.get("stop_strings"), list):
        config.stop_strings = set(map(str, fields["stop_strings"]))
    stop_ids: set[int] = set()
    if isinstance(fields.get("eos_token_id"), list) and fields["eos_token_id"]:
        ordered = [int(i) for i in fields["eos_token_id"]]
        stop_ids.update(ordered)
        if eos == -1:
            eos = ordered[0]
    early = fields.get("early_stopping")
    if early == "never":
        config.stop_criteria = genai.StopCriteria.NEVER
    elif early is True:
        config.stop_criteria = genai.StopCriteria.EARLY
    elif early is False:
        config.stop_criteria = genai.StopCriteria.HEURISTIC
    if stop_ids:
        config.stop_token_ids = stop_ids
    if eos != -1:
        config.set_eos_token_id(eos)
    return config
