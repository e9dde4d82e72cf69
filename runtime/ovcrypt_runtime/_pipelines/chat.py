"""The chat template of a tokenizer as openvino-genai's folder constructor finds it, from decrypted bytes.

openvino-genai's `Tokenizer(folder)` (src/cpp/src/tokenizer/tokenizer_impl.cpp, `setup_tokenizer`) reads
`tokenizer_config.json`, `processor_config.json`, `chat_template.json` and `chat_template.jinja` in this order,
a later file's template replacing an earlier one's, and then lets the tokenizer IR's rt_info `chat_template`
replace them all. A Tokenizer built from memory sees only the IR, so the runtime applies the files' template
with `Tokenizer.set_chat_template` when the IR has none: the same template the folder would have given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

# In openvino-genai's reading order: the last one found wins.
CHAT_TEMPLATE_FILES = ("tokenizer_config.json", "processor_config.json", "chat_template.json", "chat_template.jinja")
_IR_MARK = b"<chat_template"  # rt_info entry: <chat_template value="..."/> or <chat_template><default .../>


def template_in_ir(tokenizer_xml: bytes | memoryview) -> bool:
    """Whether a tokenizer IR carries a chat template in its rt_info (which then wins over every file)."""
    return _IR_MARK in bytes(tokenizer_xml)


def chat_template_of(files: Mapping[str, bytes], prefix: str = "") -> tuple[str, str] | None:
    """(template, the file it came from) among `files` (relative path -> bytes, those present of
    CHAT_TEMPLATE_FILES under `prefix`), by openvino-genai's rules; None when none holds one."""
    found: tuple[str, str] | None = None
    for name in CHAT_TEMPLATE_FILES:
        path = prefix + name
        if path not in files:
            continue
        data = files[path]
        if name.endswith(".jinja"):
            found = (data.decode("utf-8", "replace"), path)
            continue
        try:
            field = json.loads(data).get("chat_template")
        except (ValueError, AttributeError):
            continue
        if isinstance(field, str):
            found = (field, path)
        elif isinstance(field, list):  # [{"name": "default", "template": "..."}] (Cohere's models)
            default = [t["template"] for t in field if isinstance(t, dict) and t.get("name") == "default"
                       and isinstance(t.get("template"), str)]  # fmt: skip
            if default:
                found = (default[0], path)
    return found
