"""Issue 10: every CLI verb works on folder models too: encrypt, inspect, verify, decrypt, rekey and compile."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hatch_ovcrypt.cli import main
from tests.helpers import REPO, render_folder

LLM = REPO / "tests" / "fixtures" / "tiny_llm"


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.key", tmp_path / "b.key"
    a.write_text(bytes(range(32)).hex())
    b.write_text(bytes(range(1, 33)).hex())
    return a, b


def plain_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_encrypt_inspect_verify_decrypt_a_folder(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "enc"
    code, text, _ = cli(capsys, "encrypt", LLM, "--name", "assistant", "--out", out, "--key-file", keys[0])
    assert code == 0 and "model 'assistant' (llm, 11 file(s))" in text, text
    encrypted = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.ovc"))
    assert encrypted == [f"assistant/{p}.ovc" for p in plain_files(LLM)]
    code, text, _ = cli(capsys, "inspect", out)
    assert code == 0 and "model name      assistant/tokenizer.json" in text and "role            data" in text
    code, text, _ = cli(capsys, "verify", out, "--key-file", keys[0])
    assert code == 0 and text.count("ok: ") == 11
    code, _, _ = cli(capsys, "decrypt", out, "--out", tmp_path / "plain", "--key-file", keys[0])
    assert code == 0 and plain_files(tmp_path / "plain" / "assistant") == plain_files(LLM)


def test_rekey_and_compile_an_ovcrypt_folder_with_a_folder_model(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = render_folder(tmp_path / "_ovcrypt", {"assistant": LLM}, bytes(range(32)))
    code, text, err = cli(capsys, "rekey", folder, "--new-key-file", keys[1], "--key-file", keys[0])
    assert code == 0 and "re-signed" in text, err
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["key_id"] != "" and manifest["models"]["assistant"]["kind"] == "llm"
    code, text, err = cli(capsys, "verify", folder, "--key-file", keys[1])
    assert code == 0 and "lists every file as it is" in text, err
    code, text, err = cli(capsys, "compile", folder, "--part", "openvino_detokenizer", "--key-file", keys[1])
    assert code == 0 and "model 'assistant': compiled on CPU" in text and "output" in text, err
    code, text, err = cli(capsys, "compile", folder, "--key-file", keys[1])  # the main IR, openvino_model
    assert code == 0 and "input_ids" in text, err


def test_rekey_refuses_a_rolled_back_folder_file_and_writes_nothing(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 9 item 2: a file rolled back to an earlier release is named, never laundered into a signed folder."""
    old_release = tmp_path / "old"
    shutil.copytree(LLM, old_release)
    (old_release / "generation_config.json").write_text('{"max_new_tokens": 1000000}')
    old = render_folder(tmp_path / "old_ovcrypt", {"assistant": old_release}, bytes(range(32)))
    folder = render_folder(tmp_path / "_ovcrypt", {"assistant": LLM}, bytes(range(32)))
    rolled = Path("models/assistant/generation_config.json.ovc")
    shutil.copy(old / rolled, folder / rolled)
    before = plain_files(folder)
    verbs: list[list[str | Path]] = [
        ["verify", folder, "--key-file", keys[0]], ["rekey", folder, "--new-key-file", keys[1], "--key-file", keys[0]]
    ]
    for verb in verbs:
        code, _, err = cli(capsys, *verb)
        assert code == 1 and "assistant/generation_config.json.ovc is not the file it was signed with" in err, err
    assert plain_files(folder) == before
