"""Folder models (issue 10): exported LLM, VLM and Stable Diffusion folders encrypted file by file, and OpenVINO
GenAI pipelines built from them in memory that behave exactly like the same pipelines built from the plain folder.

The fixtures in tests/fixtures/ are tiny random models made offline by tests/fixtures/make_genai_fixtures.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import openvino as ov
import openvino_genai as genai
import pytest

from hatch_ovcrypt.hook.writer import render_table
from ovcrypt_runtime._errors import (
    IntegrityError,
    KeyMissingError,
    ModelNotFoundError,
    UnsupportedModelError,
    WrongKeyError,
)
from ovcrypt_runtime._loading.runtime import Runtime
from ovcrypt_runtime._pipelines import genai as _genai
from tests.helpers import REPO

FIXTURES = REPO / "tests" / "fixtures"
LLM, VLM, SD = FIXTURES / "tiny_llm", FIXTURES / "tiny_vlm", FIXTURES / "tiny_sd"
PROMPTS = ["hello", "The quick brown fox", "What is OpenVINO?"]


def render(dest: Path, models: dict[str, Path], key: bytes) -> Path:
    render_table({"models": {name: str(path) for name, path in models.items()}}, dest, dest / "_ovcrypt",
                 package="acme_vision", key=key, environ={})  # fmt: skip
    return dest / "_ovcrypt"


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    key = bytes(range(32))
    return render(tmp_path_factory.mktemp("llm"), {"assistant": LLM}, key), key


def runtime(folder: Path, key: bytes | None) -> Runtime:
    rt = Runtime(folder, "acme_vision")
    if key is not None:
        rt.keyring.add(key)
    return rt


def test_folder_is_encrypted_file_by_file_with_relative_paths(llm: tuple[Path, bytes]) -> None:
    folder, key = llm
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["models"]["assistant"]
    plain = sorted(p.relative_to(LLM).as_posix() for p in LLM.rglob("*") if p.is_file())
    assert entry["kind"] == "llm" and sorted(entry["files"]) == plain
    assert sorted(p.relative_to(folder / "models").as_posix() for p in (folder / "models").rglob("*.ovc")) == [
        f"assistant/{p}.ovc" for p in plain
    ]
    rt = runtime(folder, key)
    for relpath in plain:  # read_file gives back every file exactly
        assert rt.read_file("assistant", relpath) == (LLM / relpath).read_bytes(), relpath
    settings = (folder / "_settings.py").read_text()
    assert "EXTENSIONS: tuple[str, ...] = ('openvino_tokenizers',)" in settings


def test_llm_pipeline_generates_exactly_what_the_plain_folder_generates(llm: tuple[Path, bytes]) -> None:
    folder, key = llm
    rt = runtime(folder, key)
    encrypted = _genai.llm_pipeline(rt, "assistant", "CPU", {})
    plain = genai.LLMPipeline(str(LLM), "CPU")
    for prompt in PROMPTS:
        assert encrypted.generate(prompt) == plain.generate(prompt), prompt  # the folder's generation_config.json
        assert encrypted.generate(prompt, max_new_tokens=5) == plain.generate(prompt, max_new_tokens=5)
        assert encrypted.generate(prompt, max_new_tokens=7, apply_chat_template=False) == plain.generate(
            prompt, max_new_tokens=7, apply_chat_template=False
        )
    config = encrypted.get_generation_config()
    assert config.max_new_tokens == json.loads((LLM / "generation_config.json").read_text())["max_new_tokens"] == 12


def test_tokenizer_and_generation_config_equal_the_originals(llm: tuple[Path, bytes]) -> None:
    folder, key = llm
    rt = runtime(folder, key)
    tok, plain = _genai.tokenizer(rt, "assistant", "CPU", {}), genai.Tokenizer(str(LLM))
    for prompt in PROMPTS:
        assert np.array_equal(tok.encode(prompt).input_ids.data, plain.encode(prompt).input_ids.data)
    assert tok.chat_template == plain.chat_template and tok.chat_template
    chat = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(chat, add_generation_prompt=True) == plain.apply_chat_template(
        chat, add_generation_prompt=True
    )
    assert tok.get_vocab() == plain.get_vocab()
    assert (tok.get_bos_token_id(), tok.get_eos_token_id(), tok.get_pad_token_id()) == (
        plain.get_bos_token_id(), plain.get_eos_token_id(), plain.get_pad_token_id())  # fmt: skip
    config = _genai.generation_config(rt, "assistant")
    reference = genai.GenerationConfig(str(LLM / "generation_config.json"))
    for field in ("max_new_tokens", "do_sample", "eos_token_id", "temperature", "top_k", "top_p"):
        assert getattr(config, field) == getattr(reference, field), field


def test_parts_are_reached_by_path_without_suffix(llm: tuple[Path, bytes]) -> None:
    folder, key = llm
    rt = runtime(folder, key)
    import openvino_tokenizers  # noqa: F401  (the plain side needs the extension to read tokenizer IRs)

    core = ov.Core()
    tokenizer = rt.compile_model("assistant", part="openvino_tokenizer")
    reference = core.compile_model(core.read_model(str(LLM / "openvino_tokenizer.xml")), "CPU")
    text = ["hello world"]
    assert np.array_equal(tokenizer(text)["input_ids"], reference(text)["input_ids"])
    main = core.read_model(str(LLM / "openvino_model.xml"))
    assert rt.read_model("assistant").get_friendly_name() == main.get_friendly_name()
    with pytest.raises(ModelNotFoundError, match=r"no IR part 'tokenizer'.*openvino_detokenizer"):
        rt.read_model("assistant", part="tokenizer")
    with pytest.raises(ModelNotFoundError, match=r"no file 'missing\.json'"):
        rt.read_file("assistant", "missing.json")


def test_wrong_or_missing_key_and_each_tampered_kind_are_refused(llm: tuple[Path, bytes], tmp_path: Path) -> None:
    folder, key = llm
    with pytest.raises(KeyMissingError, match="OVCRYPT_KEY"):
        _genai.llm_pipeline(runtime(folder, None), "assistant", "CPU", {})
    with pytest.raises(WrongKeyError):
        _genai.llm_pipeline(runtime(folder, bytes(32)), "assistant", "CPU", {})
    for relpath in ("openvino_model.bin", "openvino_tokenizer.xml", "generation_config.json", "tokenizer.json"):
        copy = tmp_path / relpath / "_ovcrypt"
        shutil.copytree(folder, copy)
        target = copy / "models" / "assistant" / f"{relpath}.ovc"
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 1
        target.write_bytes(bytes(data))
        with pytest.raises(IntegrityError, match=f"assistant/{relpath}.ovc"):
            runtime(copy, key).read_file("assistant", relpath)
        if relpath != "tokenizer.json":  # the files the pipeline reads (it needs no tokenizer.json)
            with pytest.raises(IntegrityError, match=f"assistant/{relpath}.ovc"):
                _genai.llm_pipeline(runtime(copy, key), "assistant", "CPU", {})


def test_a_file_moved_to_another_path_is_refused(llm: tuple[Path, bytes], tmp_path: Path) -> None:
    folder, key = llm
    copy = tmp_path / "_ovcrypt"
    shutil.copytree(folder, copy)
    models = copy / "models" / "assistant"
    shutil.copy(models / "config.json.ovc", models / "generation_config.json.ovc")
    with pytest.raises(IntegrityError, match=r"generation_config\.json\.ovc"):
        runtime(copy, key).read_file("assistant", "generation_config.json")


def test_vlm_pipeline_generates_what_the_plain_folder_generates(tmp_path: Path) -> None:
    key = bytes(range(1, 33))
    folder = render(tmp_path, {"seer": VLM}, key)
    assert json.loads((folder / "manifest.json").read_text())["models"]["seer"]["kind"] == "vlm"
    image = ov.Tensor(np.fromfunction(lambda y, x, c: (x * 8 + y * 4 + c * 60) % 256, (32, 32, 3)).astype(np.uint8))
    encrypted = _genai.vlm_pipeline(runtime(folder, key), "seer", "CPU", {})
    plain = genai.VLMPipeline(str(VLM), "CPU")
    for prompt in ("What is in the picture?", "Describe it"):
        got = encrypted.generate(prompt, images=[image], max_new_tokens=8)
        assert got.texts == plain.generate(prompt, images=[image], max_new_tokens=8).texts
    config = encrypted.get_generation_config()
    assert config.max_new_tokens == genai.GenerationConfig(str(VLM / "generation_config.json")).max_new_tokens


def test_text2image_pipeline_gives_the_plain_folders_pixels(tmp_path: Path) -> None:
    key = bytes(range(2, 34))
    folder = render(tmp_path, {"painter": SD}, key)
    assert json.loads((folder / "manifest.json").read_text())["models"]["painter"]["kind"] == "text2image"
    encrypted = _genai.text2image_pipeline(runtime(folder, key), "painter", "CPU", {})
    plain = genai.Text2ImagePipeline(str(SD), "CPU")
    args = {"width": 32, "height": 32, "num_inference_steps": 2, "rng_seed": 42}
    image = encrypted.generate("a photo of a red cat", **args).data
    assert image.shape == (1, 32, 32, 3) and np.array_equal(image, plain.generate("a photo of a red cat", **args).data)


def test_configs_never_touch_a_disk(llm: tuple[Path, bytes], tmp_path: Path) -> None:
    """While a pipeline is built, its decrypted configs exist only as memory files: the folder holds links."""
    from ovcrypt_runtime._pipelines.memfiles import memory_folder

    data = {"a.json": b'{"secret": 1}', "sub/b.json": b"[2]"}
    with memory_folder(data) as folder:
        for relpath, content in data.items():
            path = folder / relpath
            assert path.is_symlink() and "/fd/" in str(path.readlink()) and path.read_bytes() == content
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert not folder.exists()


ASSISTANT = """
import json, sys
from acme_vision._ovcrypt import generation_config, llm_pipeline, model_names, read_file, tokenizer
pipe = llm_pipeline("assistant")
out = {"names": model_names(), "texts": [pipe.generate(p) for p in sys.argv[1:]],
       "short": [pipe.generate(p, max_new_tokens=4) for p in sys.argv[1:]],
       "ids": [tokenizer("assistant").encode(p).input_ids.data.tolist() for p in sys.argv[1:]],
       "max_new_tokens": generation_config("assistant").max_new_tokens,
       "config": read_file("assistant", "config.json").decode()}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_wheel_with_an_llm_folder_generates_in_a_fresh_venv(tmp_path: Path, key_env: dict[str, str]) -> None:
    """Done-criterion of issue 10: the tiny LLM folder in the table builds into a wheel that holds no plaintext of
    any of its files; installed in a fresh venv, llm_pipeline generates exactly what the plain folder generates."""
    from tests.helpers import build_wheel, find_leaks, only_wheel, plaintext_windows, write_product
    from tests.venvs import Venv

    project = write_product(tmp_path / "product", {"assistant": "models/assistant"})
    shutil.copytree(LLM, project / "models" / "assistant")
    build_wheel(project, key_env)
    wheel = only_wheel(project / "dist")
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        blobs = [(n, zf.read(n)) for n in zf.namelist()]
    plain_files = [p for p in LLM.rglob("*") if p.is_file()]
    assert find_leaks(plaintext_windows(plain_files, step=64), blobs) == []
    assert not [n for n, _ in blobs if n.endswith((".xml", ".bin", ".json", ".jinja")) and "/manifest.json" not in n]
    env = Venv(tmp_path / "venv")
    env.pip_install(str(wheel))
    venv_python = str(env.python)
    from tests.helpers import run

    out = run([venv_python, "-c", ASSISTANT, *PROMPTS], env=key_env, cwd=tmp_path)
    result = json.loads(out.stdout.splitlines()[-1])
    plain = genai.LLMPipeline(str(LLM), "CPU")
    plain_tok = genai.Tokenizer(str(LLM))
    assert result["names"] == ["assistant"]
    assert result["texts"] == [plain.generate(p) for p in PROMPTS]
    assert result["short"] == [plain.generate(p, max_new_tokens=4) for p in PROMPTS]
    assert result["ids"] == [plain_tok.encode(p).input_ids.data.tolist() for p in PROMPTS]
    assert result["max_new_tokens"] == 12 and result["config"] == (LLM / "config.json").read_text()


def _whisper_like(folder: Path) -> Path:
    """A folder shaped like a Whisper export: encoder and decoder IRs (tiny MLPs here) and a config."""
    from tests.helpers import make_ir

    for stem in ("openvino_encoder_model", "openvino_decoder_model"):
        make_ir(folder / f"{stem}.xml", 4096, seed=len(stem))
    (folder / "config.json").write_text('{"architectures": ["WhisperForConditionalGeneration"]}')
    return folder


def test_a_folder_genai_cannot_build_from_memory_is_refused_with_the_reason(tmp_path: Path) -> None:
    from hatch_ovcrypt.config import ConfigurationError

    folder = _whisper_like(tmp_path / "whisper")
    with pytest.raises(ConfigurationError) as info:
        render(tmp_path / "out", {"listener": folder}, bytes(32))
    message = str(info.value)
    assert "speech-recognition (Whisper)" in message and "cannot build its pipeline from memory" in message
    assert 'kind = "files"' in message and "never decrypts to disk" in message


def test_kind_files_ships_any_folder_reached_by_part_and_path(tmp_path: Path) -> None:
    from hatch_ovcrypt.hook.writer import render_table

    folder = _whisper_like(tmp_path / "whisper")
    render_table({"models": {"listener": {"folder": str(folder), "kind": "files"}}}, tmp_path, tmp_path / "_ovcrypt",
                 package="acme_vision", key=bytes(32), environ={})  # fmt: skip
    rt = runtime(tmp_path / "_ovcrypt", bytes(32))
    assert sorted(rt.files.model("listener").parts("listener")) == ["openvino_decoder_model", "openvino_encoder_model"]
    x = np.ones((1, 64), np.float32)
    expected = ov.Core().compile_model(str(folder / "openvino_encoder_model.xml"), "CPU")(x)[0]
    assert np.array_equal(rt.compile_model("listener", part="openvino_encoder_model")(x)[0], expected)
    assert rt.read_file("listener", "config.json") == (folder / "config.json").read_bytes()
    with pytest.raises(ModelNotFoundError, match="several IRs: pass part="):
        rt.read_model("listener")
    with pytest.raises(UnsupportedModelError, match="kind 'files'; llm_pipeline needs a model of kind llm"):
        _genai.llm_pipeline(rt, "listener", "CPU", {})


def test_folder_paths_are_validated(tmp_path: Path) -> None:
    """No symbolic links (a file or a folder leading outside), no names the manifest cannot carry."""
    from hatch_ovcrypt.config import ConfigurationError

    folder = tmp_path / "assistant"
    shutil.copytree(LLM, folder)
    (tmp_path / "secret.txt").write_text("outside the model")
    (folder / "notes.txt").symlink_to(tmp_path / "secret.txt")
    (folder / "linked").symlink_to(tmp_path)
    (folder / "my file.json").write_text("{}")
    with pytest.raises(ConfigurationError) as info:
        render(tmp_path / "out", {"assistant": folder}, bytes(32))
    message = str(info.value)
    assert "notes.txt is a symbolic link" in message and "linked is a symbolic link" in message
    assert "my file.json: the path may only use letters, digits" in message
    assert not (tmp_path / "out" / "_ovcrypt" / "manifest.json").exists()
