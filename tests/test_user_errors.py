"""Issue 18: what a new user meets first is one line that says what is wrong and where, never a traceback.

`hatch-ovcrypt check` on a pyproject that does not parse, on a hook table at a path hatchling never reads, in
an environment without openvino-tokenizers; and a runtime WrongKeyError that says where each key came from.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hatch_ovcrypt.cli import main
from ovcrypt_runtime._errors import KeyMissingError, WrongKeyError
from ovcrypt_runtime._format.spec import key_id
from tests.helpers import REPO, make_ir, render_folder, runtime_for, write_product

HOOK = "tool.hatch.build.targets.wheel.hooks.ovcrypt"
# The README's example as it was: an inline table spread over lines, with comments (TOML 1.0 forbids both).
MULTI_LINE_TABLE = """\
[project]
name = "acme-vision"
version = "1.0.0"

[tool.hatch.build.targets.wheel.hooks.ovcrypt]
models = { detector = "models/detector.xml",    # an IR
           assistant = "models/assistant" }
"""


def check(project: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", str(project), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line:\n{err}"
    assert "Traceback" not in err
    return err


# --- a pyproject that does not parse ------------------------------------------------------------------------


def test_a_pyproject_that_does_not_parse_is_one_line_with_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pyproject.toml").write_text(MULTI_LINE_TABLE)
    code, _, err = check(tmp_path, capsys)
    assert code == 1
    line = one_line(err)
    assert f"{tmp_path / 'pyproject.toml'}:6:49: not valid TOML: Invalid initial character for a key part" in line
    assert "the inline table `{ ... }` opened on line 6 holds a comment or a line break" in line
    assert "write it on one line without comments, or as a [table] of its own" in line


def test_a_line_break_in_an_inline_table_is_explained_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pyproject.toml").write_text(MULTI_LINE_TABLE.replace("    # an IR", ""))
    _, _, err = check(tmp_path, capsys)
    assert ":6:" in one_line(err) and "opened on line 6 holds a comment or a line break" in err


def test_other_toml_errors_and_hatch_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\nversion = 1.0.0\n')
    _, _, err = check(tmp_path, capsys)
    assert one_line(err).endswith(f"{pyproject}:3:14: not valid TOML: Expected newline or end of document after a "
                                  "statement\n")  # fmt: skip
    assert "inline table" not in err
    pyproject.write_text('[project]\nname = "x"\nversion = "1"\n')
    (tmp_path / "hatch.toml").write_text("[build\n")
    _, _, err = check(tmp_path, capsys)
    assert f"{tmp_path / 'hatch.toml'}:1:7: not valid TOML" in one_line(err)


@pytest.mark.parametrize(
    ("before", "after", "refusal"),
    [
        ("[tool.hatch.build.targets.sdist]\n", "[tool.hatch.build]\nhooks = 3\n[tool.hatch.build.targets.sdist]\n",
         "Field `tool.hatch.build.hooks` must be a table"),
        ('packages = ["src/acme_vision"]', 'packages = "src"',
         "Field `tool.hatch.build.targets.wheel.packages` must be an array of strings"),
        ('name = "acme-vision"\n', "", "Missing required field `project.name`"),
        ("dependencies = [", 'dependencies = ["num py", ',
         "Dependency #1 of field `project.dependencies` is invalid: Expected semicolon"),
    ],
)  # fmt: skip
def test_hatchlings_own_refusals_are_one_line(
    tmp_path: Path, key_env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    before: str, after: str, refusal: str,
) -> None:  # fmt: skip
    project = write_product(tmp_path, {"m": "models/m.xml"})
    make_ir(project / "models/m.xml")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(before, after, 1))
    monkeypatch.setenv("OVCRYPT_KEY", key_env["OVCRYPT_KEY"])
    code, _, err = check(project, capsys)
    assert code == 1 and f"{pyproject}: {refusal}" in one_line(err)


# --- hook tables where hatchling never looks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("tool.hatch.build.target.wheel.hooks.ovcrypt", HOOK),
        ("tool.hatch.build.targets.wheels.hooks.ovcrypt", HOOK),
        ("tool.hatch.build.targets.wheel.hook.ovcrypt", HOOK),
        ("tool.hatch.build.targets.wheel.ovcrypt", HOOK),
        ("tool.hatch.build.hook.ovcrypt", "tool.hatch.build.hooks.ovcrypt"),
        ("tool.hatchling.build.targets.wheel.hooks.ovcrypt", HOOK),
        ("tool.ovcrypt", HOOK),
    ],
)
def test_a_misplaced_hook_table_names_the_path_meant(
    tmp_path: Path, key_env: dict[str, str], capsys: pytest.CaptureFixture[str], written: str, meant: str
) -> None:
    project = write_product(tmp_path, {"m": "models/m.xml"})
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(f"[{HOOK}]", f"[{written}]"))
    code, _, err = check(project, capsys)
    assert code == 1
    assert f"`{written}` is not a table hatchling reads, so builds ignore it and ship no models: did you mean " \
           f"[{meant}]?" in one_line(err)  # fmt: skip


def test_a_misspelt_hook_name_names_the_hook(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = write_product(tmp_path, {"m": "models/m.xml"})
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(f"[{HOOK}]", "[tool.hatch.build.targets.wheel.hooks.ovcrpyt]"))
    _, _, err = check(project, capsys)
    assert "`tool.hatch.build.targets.wheel.hooks.ovcrpyt` names build hook `ovcrpyt`, which is not installed" in err
    assert f"did you mean [{HOOK}]?" in one_line(err)


def test_a_misplaced_table_beside_the_right_one_fails_the_check(
    tmp_path: Path, key_env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wheel's table is right, but the sdist's settings sit at `target.sdist`: they would be ignored."""
    sdist = "[tool.hatch.build.target.sdist.hooks.ovcrypt]\nallow-plaintext-sdist = true\n"
    project = write_product(tmp_path, {"m": "models/m.xml"}, extra_toml=sdist)
    make_ir(project / "models/m.xml")
    for name, value in key_env.items():
        monkeypatch.setenv(name, value)
    code, out, err = check(project, capsys)
    assert code == 1 and not out
    assert "`tool.hatch.build.target.sdist.hooks.ovcrypt` is not a table hatchling reads" in err
    assert "did you mean [tool.hatch.build.targets.sdist.hooks.ovcrypt]?" in err
    # Unrelated tables with names near `ovcrypt` are left alone, and the model names inside the hook's own table.
    text = (project / "pyproject.toml").read_text().replace(sdist, "[tool.hatch.envs.crypto]\ntype = 'virtual'\n")
    (project / "pyproject.toml").write_text(text.replace("models = { m =", "models = { ovcrypto ="))
    code, out, err = check(project, capsys)
    assert code == 0, err
    assert out.startswith("ok: 1 model(s) (ovcrypto)")


def test_a_hook_table_hidden_by_hatch_toml_says_where_to_move_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hatchling takes [tool.hatch]'s top-level keys from hatch.toml when it has them: its [build] hides ours."""
    project = write_product(tmp_path, {"m": "models/m.xml"})
    (project / "hatch.toml").write_text('[build.targets.sdist]\nexclude = ["/models"]\n')
    _, _, err = check(project, capsys)
    assert f"`{HOOK}` is hidden by [build] in hatch.toml, which replaces all of pyproject.toml's " \
           "[tool.hatch.build]: move the table into hatch.toml as [build.targets.wheel.hooks.ovcrypt]" in one_line(err)


# --- openvino-tokenizers missing where `check` runs -------------------------------------------------------


@pytest.mark.parametrize("asks", [True, False])
def test_check_without_tokenizers_says_where_to_install_them(tmp_path: Path, key_env: dict[str, str],
                                                             asks: bool) -> None:  # fmt: skip
    requires = '"hatchling", "hatch-ovcrypt[genai]"' if asks else '"hatchling", "hatch-ovcrypt"'
    project = write_product(tmp_path, {"tok": "models/tok.xml"}, requires=requires)
    (project / "models").mkdir()
    for suffix in (".xml", ".bin"):
        shutil.copy(REPO / "tests/fixtures/tiny_llm" / f"openvino_tokenizer{suffix}", project / f"models/tok{suffix}")
    # A Python without openvino-tokenizers: its import fails there, as where it is not installed.
    code = "import sys; sys.modules['openvino_tokenizers'] = None; from hatch_ovcrypt.cli import main; " \
           "sys.exit(main(sys.argv[1:]))"  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code, "check", str(project)], capture_output=True, text=True,
                            env={**os.environ, **key_env}, check=False)  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    err = result.stderr
    assert f"`{HOOK}.models.tok` OpenVINO cannot read models/tok.xml" in err
    assert f"install `hatch-ovcrypt[genai]` into the Python these checks run in ({sys.executable})" in err
    if asks:
        assert "which [build-system] requires already asks for: the pyproject is right" in err
        assert "requires = [" not in err
    else:
        assert 'add it to the build (`requires = ["hatchling", "hatch-ovcrypt[genai]"]` under [build-system])' in err


# --- the runtime's WrongKeyError ------------------------------------------------------------------------------


def test_wrong_key_error_says_where_each_key_came_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    right, by_set_key, by_env, by_file, by_provider = (secrets.token_bytes(32) for _ in range(5))
    folder = render_folder(tmp_path / "_ovcrypt", {"det": make_ir(tmp_path / "det.xml")}, right)
    key_file = tmp_path / "key.txt"
    key_file.write_text(by_file.hex() + "\n")
    monkeypatch.setenv("OVCRYPT_KEY", by_env.hex())
    monkeypatch.setenv("OVCRYPT_KEY_FILE", str(key_file))
    runtime = runtime_for(folder)
    runtime.keyring.add(by_set_key)
    runtime.keyring.set_provider(lambda wanted: by_provider)
    with pytest.raises(WrongKeyError) as info:
        runtime.compile_model("det")
    message = str(info.value)
    ids = {key: key_id(key).hex() for key in (right, by_set_key, by_env, by_file, by_provider)}
    assert f"needs key id {ids[right]}, but set_key() offers key id {ids[by_set_key]}; $OVCRYPT_KEY offers key id " \
           f"{ids[by_env]}; $OVCRYPT_KEY_FILE ({key_file}) offers key id {ids[by_file]}; the key provider offers " \
           f"key id {ids[by_provider]}" in message  # fmt: skip
    assert "\n" not in message
    for key in (right, by_set_key, by_env, by_file, by_provider):
        assert key.hex() not in message.lower()

    # A provider that has no key for the id is named as such; with no key at all, the error says what to set.
    monkeypatch.delenv("OVCRYPT_KEY_FILE")
    declining = runtime_for(folder)  # a new runtime: the first one remembers the manifest's failure
    declining.keyring.set_provider(lambda wanted: None)
    with pytest.raises(WrongKeyError, match=r"\$OVCRYPT_KEY offers key id [0-9a-f]+; the key provider returned None"):
        declining.compile_model("det")
    monkeypatch.delenv("OVCRYPT_KEY")
    fresh = runtime_for(folder)
    fresh.keyring.set_provider(lambda wanted: None)
    with pytest.raises(KeyMissingError, match=r"set the environment variable OVCRYPT_KEY .* the key provider returned"):
        fresh.compile_model("det")
