"""Issue 20: the chat template wherever the export keeps it.

openvino-genai's folder constructor finds a tokenizer's chat template in `tokenizer_config.json`,
`processor_config.json`, `chat_template.json` and `chat_template.jinja` (a later one wins), and in the tokenizer
IR's rt_info above them all. Built from memory, a Tokenizer sees only the IR: before this, a wheel of an export
whose template was only in a file lost it (`''`; generate() silently untemplated; chat failed). Each variant here
is a temp copy of tiny_llm / tiny_vlm with the template moved; the encrypted pipeline must equal the folder's.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import openvino as ov
import openvino_genai as genai
import pytest

from hatch_ovcrypt.hook.writer import render_table
from ovcrypt_runtime._loading.runtime import Runtime
from ovcrypt_runtime._pipelines import genai as _genai
from tests.helpers import REPO

FIXTURES = REPO / "tests" / "fixtures"
KEY = bytes(range(7, 39))
# Distinct templates, so that which one won shows in the prompt the model sees.
A = "{% for m in messages %}A {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
B = ("{% for m in messages %}<|user|>B {{ m['content'] }}</s>\n{% endfor %}"
     "{% if add_generation_prompt %}<|assistant|>{% endif %}")
C = "{% for m in messages %}C: {{ m['content'] }}</s>{% endfor %}"
CHAT = [{"role": "user", "content": "hello"}]


def strip_ir_template(folder: Path) -> None:
    """Remove the template from the tokenizer and detokenizer IRs' rt_info (as older exports have none)."""
    for name in ("openvino_tokenizer.xml", "openvino_detokenizer.xml"):
        xml = folder / name
        text, count = re.subn(r"\s*<chat_template value=\"[^\"]*\" />", "", xml.read_text())
        assert count == 1, name
        xml.write_text(text)


def set_json_template(path: Path, template: object) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    data["chat_template"] = template
    path.write_text(json.dumps(data))


def variant(source: Path, dest: Path, where: str) -> Path:
    """A copy of `source` with its template in `where` only (or, for the precedence cases, in two places)."""
    shutil.copytree(source, dest)
    jinja = dest / "chat_template.jinja"
    if where == "ir beats jinja":
        jinja.write_text(A)
        return dest
    strip_ir_template(dest)
    jinja.unlink()
    if where == "chat_template.jinja":
        jinja.write_text(A)
    elif where == "chat_template.json":
        set_json_template(dest / "chat_template.json", B)
    elif where == "tokenizer_config.json":
        set_json_template(dest / "tokenizer_config.json", C)
    elif where == "tokenizer_config.json list":
        set_json_template(dest / "tokenizer_config.json", [{"name": "tool_use", "template": C},
                                                           {"name": "default", "template": B}])  # fmt: skip
    elif where == "jinja beats json beats tokenizer_config":
        set_json_template(dest / "tokenizer_config.json", C)
        set_json_template(dest / "chat_template.json", B)
        jinja.write_text(A)
    elif where == "json beats processor_config beats tokenizer_config":
        set_json_template(dest / "tokenizer_config.json", C)
        set_json_template(dest / "processor_config.json", A)
        set_json_template(dest / "chat_template.json", B)
    elif where != "nowhere":
        raise ValueError(where)
    return dest


def runtime_of(tmp_path: Path, models: dict[str, Path]) -> Runtime:
    render_table({"models": {k: str(v) for k, v in models.items()}}, tmp_path, tmp_path / "_ovcrypt",
                 package="acme_vision", key=KEY, environ={})  # fmt: skip
    rt = Runtime(tmp_path / "_ovcrypt", "acme_vision")
    rt.keyring.add(KEY)
    return rt


LLM_PLACES = ["chat_template.jinja", "chat_template.json", "tokenizer_config.json", "tokenizer_config.json list",
              "jinja beats json beats tokenizer_config", "json beats processor_config beats tokenizer_config",
              "ir beats jinja", "nowhere"]  # fmt: skip


@pytest.mark.parametrize("where", LLM_PLACES)
def test_llm_tokenizer_and_pipeline_get_the_folders_template(tmp_path: Path, where: str) -> None:
    folder = variant(FIXTURES / "tiny_llm", tmp_path / "model", where)
    rt = runtime_of(tmp_path / "out", {"chat": folder})
    plain_tok = genai.Tokenizer(str(folder))
    tok = _genai.tokenizer(rt, "chat", "CPU", {})
    assert tok.chat_template == plain_tok.chat_template
    if where != "nowhere":
        assert tok.chat_template, "the variant has a template: the test's premise is wrong"
        assert tok.apply_chat_template(CHAT, add_generation_prompt=True) == plain_tok.apply_chat_template(
            CHAT, add_generation_prompt=True
        )
    expected = {"chat_template.jinja": A, "chat_template.json": B, "tokenizer_config.json": C,
                "tokenizer_config.json list": B, "jinja beats json beats tokenizer_config": A,
                "json beats processor_config beats tokenizer_config": B, "nowhere": ""}  # fmt: skip
    if where in expected:
        assert tok.chat_template == expected[where]
    pipe, plain = _genai.llm_pipeline(rt, "chat", "CPU", {}), genai.LLMPipeline(str(folder), "CPU")
    assert pipe.generate("hello", max_new_tokens=6) == plain.generate("hello", max_new_tokens=6)


@pytest.mark.parametrize("where", ["chat_template.json", "chat_template.jinja"])
def test_vlm_with_its_template_only_in_a_file_generates_like_the_folder(tmp_path: Path, where: str) -> None:
    """Before: a VLM with its template only in chat_template.json/.jinja failed on every generate()."""
    folder = variant(FIXTURES / "tiny_vlm", tmp_path / "model", where)
    rt = runtime_of(tmp_path / "out", {"seer": folder})
    image = ov.Tensor(np.fromfunction(lambda y, x, c: (x * 8 + y * 4 + c * 60) % 256, (32, 32, 3)).astype(np.uint8))
    encrypted = _genai.vlm_pipeline(rt, "seer", "CPU", {})
    plain = genai.VLMPipeline(str(folder), "CPU")
    assert encrypted.get_tokenizer().chat_template == plain.get_tokenizer().chat_template != ""
    got = encrypted.generate("What is in the picture?", images=[image], max_new_tokens=6).texts
    assert got == plain.generate("What is in the picture?", images=[image], max_new_tokens=6).texts


def test_the_build_warns_when_a_template_is_only_in_a_file(tmp_path: Path) -> None:
    from hatch_ovcrypt.checks.models import check_model
    from hatch_ovcrypt.config import FOLDER, ModelSpec

    only_file = variant(FIXTURES / "tiny_llm", tmp_path / "only_file", "chat_template.json")
    plan, problems = check_model(ModelSpec("chat", only_file, "models.chat", FOLDER), tmp_path, {}, False)
    assert plan is not None and not problems
    assert len(plan.warnings) == 1 and "only in chat_template.json, not in the tokenizer IR" in plan.warnings[0]
    in_ir = variant(FIXTURES / "tiny_llm", tmp_path / "in_ir", "ir beats jinja")
    plan, _ = check_model(ModelSpec("chat", in_ir, "models.chat", FOLDER), tmp_path, {}, False)
    assert plan is not None and plan.warnings == ()
