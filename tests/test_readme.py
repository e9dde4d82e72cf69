"""Every example in README.md and docs/*.md works as written.

Each fenced ```toml block parses (TOML 1.0, as hatchling reads it), each ```python block compiles, each ```sh
block parses with `bash -n`, and every relative link points at a file and heading that exist. The README's
product example, its whole `pyproject.toml`, builds a real wheel with hatchling in an isolated build
environment that installs hatch-ovcrypt as the example's `[build-system] requires` names it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from hatch_ovcrypt import __version__
from tests.helpers import (
    REPO,
    build_wheel,
    find_leaks,
    make_ir,
    only_wheel,
    plaintext_windows,
    reference_output,
    run,
    runtime_for,
    sample_input,
    unpack,
)
from tests.test_convert import onnx_mlp, save_onnx

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10, where hatchling brings tomli
    import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CHECKED = ("toml", "python", "sh")
LLM_FIXTURE = REPO / "tests" / "fixtures" / "tiny_llm"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, dedented by their fence's indentation (blocks in lists)."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = re.fullmatch(r"( *)```(\S*)\s*", lines[i])
        if opening is None:
            i += 1
            continue
        indent, language = len(opening.group(1)), opening.group(2)
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{path.relative_to(REPO)}:{i + 1}: a code fence that is never closed"
        body = "\n".join(line[indent:] if line[:indent].isspace() else line for line in lines[i + 1 : end])
        blocks.append(Block(path, i + 1, language, body + "\n"))
        i = end + 1
    return blocks


ALL_BLOCKS = [block for path in DOCUMENTS for block in fenced_blocks(path)]


def blocks_of(language: str) -> list[pytest.param]:  # type: ignore[valid-type]
    return [pytest.param(b, id=b.where) for b in ALL_BLOCKS if b.language == language]


def test_every_block_names_its_language() -> None:
    """An unlabelled block would escape these checks: every fence says what it holds (text, if nothing else)."""
    assert [b.where for b in ALL_BLOCKS if not b.language] == []
    assert {b.language for b in ALL_BLOCKS if b.path.name == "README.md"} >= set(CHECKED)


@pytest.mark.parametrize("block", blocks_of("toml"))
def test_toml_block_parses(block: Block) -> None:
    try:
        tomllib.loads(block.text)
    except tomllib.TOMLDecodeError as exc:
        pytest.fail(f"{block.where}: not valid TOML: {exc}")



def hook_tables(block: Block) -> list[dict[str, object]]:
    """The `ovcrypt` hook tables a TOML block configures, global or wheel-target."""
    try:
        build = tomllib.loads(block.text).get("tool", {}).get("hatch", {}).get("build", {})
    except tomllib.TOMLDecodeError:
        return []  # test_toml_block_parses reports it
    wheel = build.get("targets", {}).get("wheel", {})
    tables = [build.get("hooks", {}).get("ovcrypt"), wheel.get("hooks", {}).get("ovcrypt")]
    return [table for table in tables if table is not None]


@pytest.mark.parametrize("block", [pytest.param(b, id=b.where) for b in ALL_BLOCKS if hook_tables(b)])
def test_hook_table_examples_use_real_options(block: Block, tmp_path: Path) -> None:
    """A misspelled option would parse as TOML and still be wrong: the plugin's own parser reads each example."""
    from hatch_ovcrypt.config import parse_options

    for table in hook_tables(block):
        raw = {"models": {"m": "models/m.xml"}, **table}  # a snippet that shows one option still needs a model
        _, problems = parse_options(raw, tmp_path, "tool.hatch.build.hooks.ovcrypt")
        # A file an option names (publisher-keys) is the reader's own project's: only its absence is forgiven.
        problems = [p for p in problems if "cannot be read" not in p.message]
        assert problems == [], f"{block.where}: {problems}"

@pytest.mark.parametrize("block", blocks_of("python"))
def test_python_block_compiles(block: Block) -> None:
    compile(block.text, block.where, "exec")


@pytest.mark.parametrize("block", blocks_of("sh"))
def test_sh_block_parses(block: Block) -> None:
    result = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{block.where}: bash -n: {result.stderr}"


# --- links ------------------------------------------------------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors: each heading lower-cased, punctuation dropped, spaces made hyphens."""
    anchors: set[str] = set()
    in_block = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
        if in_block or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path: Path) -> None:
    """Moving a section out of the README must not leave a link to where it was."""
    broken = []
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked):
            broken.append(f"{target}: no such heading")
    assert broken == [], f"{path.relative_to(REPO)}: {broken}"


# --- the product example builds ------------------------------------------------------------------------------


def product_example() -> str:
    """The README's first TOML block that is a whole pyproject.toml."""
    for block in ALL_BLOCKS:
        if block.path.name == "README.md" and block.language == "toml" and "[build-system]" in block.text:
            return block.text
    raise AssertionError("README.md has no pyproject.toml example")


def put_models_in_place(project: Path, models: dict[str, str]) -> dict[str, Path]:
    """What each model path of the example asks for: an IR, an exported LLM folder, an ONNX model."""
    placed: dict[str, Path] = {}
    for seed, (name, where) in enumerate(models.items(), start=1):
        path = project / where
        if path.suffix == ".xml":
            placed[name] = make_ir(path, 96 << 10, seed=seed)
        elif path.suffix == ".onnx":
            placed[name] = save_onnx(onnx_mlp(seed=seed), path)
        else:
            shutil.copytree(LLM_FIXTURE, path)
            placed[name] = path
    return placed


def example_project(root: Path) -> tuple[Path, dict[str, str], dict[str, Path]]:
    """The example as a product folder: its pyproject.toml verbatim, an empty package, its models in place.

    Returns (project, the models table, each model's plaintext path)."""
    text = product_example()
    models: dict[str, str] = tomllib.loads(text)["tool"]["hatch"]["build"]["hooks"]["ovcrypt"]["models"]
    project = root / "acme-vision"
    (project / "src" / "acme_vision").mkdir(parents=True)
    (project / "src" / "acme_vision" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(text)
    return project, models, put_models_in_place(project, models)


def test_product_example_pins_this_version_of_the_plugin() -> None:
    requires = tomllib.loads(product_example())["build-system"]["requires"]
    assert f"hatch-ovcrypt[genai]=={__version__}" in requires


@pytest.mark.slow
def test_product_example_builds_a_wheel(plugin_wheel_dir: Path, tmp_path: Path, key_env: dict[str, str]) -> None:
    """The README's pyproject.toml, as written, in an isolated build that finds the plugin's wheel in a folder."""
    project, models, placed = example_project(tmp_path)
    assert sorted(Path(p).suffix for p in models.values()) == ["", ".onnx", ".xml"], "an IR, a folder, an ONNX"

    build_wheel(project, key_env, isolated=True, extra_env={"PIP_FIND_LINKS": str(plugin_wheel_dir)})
    wheel = only_wheel(project / "dist")
    assert wheel.name == "acme_vision-1.0.0-py3-none-any.whl", "requires-python makes it a py3 wheel"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read("acme_vision-1.0.0.dist-info/METADATA").decode()
        blobs = [(n, zf.read(n)) for n in names]
    assert "Requires-Python: >=3.10" in metadata
    for requirement in tomllib.loads(product_example())["project"]["dependencies"]:
        assert f"Requires-Dist: {requirement}" in metadata
    ovcrypt = "acme_vision/_ovcrypt/"
    for name, where in models.items():
        if Path(where).suffix:
            assert {f"{ovcrypt}models/{name}.xml.ovc", f"{ovcrypt}models/{name}.bin.ovc"} <= names, name
        else:
            folder = {f"{ovcrypt}models/{name}/{p.relative_to(placed[name])}.ovc" for p in placed[name].rglob("*")
                      if p.is_file()}  # fmt: skip
            assert folder <= names and f"{ovcrypt}models/{name}/openvino_model.xml.ovc" in folder
    assert {f"{ovcrypt}manifest.json", f"{ovcrypt}__init__.py", f"{ovcrypt}__init__.pyi"} <= names
    plaintext = [placed["detector"].with_suffix(".bin"), placed["ocr"], placed["assistant"] / "openvino_model.bin"]
    assert find_leaks(plaintext_windows(plaintext), blobs) == []

    runtime = runtime_for(unpack(wheel, tmp_path / "unpacked") / "acme_vision" / "_ovcrypt")
    runtime.keyring.add(key_env["OVCRYPT_KEY"])
    assert sorted(runtime.model_names()) == sorted(models)
    x = sample_input()
    got = np.asarray(runtime.compile_model("detector")(x)[0])
    assert np.array_equal(got, reference_output(placed["detector"], x))
    assert np.asarray(runtime.compile_model("ocr")(x)[0]).shape == (1, 64)


def test_product_example_sdist_holds_no_models(tmp_path: Path, key_env: dict[str, str]) -> None:
    """The taught setup keeps the models out of the sdist (the hook runs for the sdist too, from the global table)."""
    project, _, _ = example_project(tmp_path)
    run([sys.executable, "-m", "build", "--sdist", "--no-isolation", str(project)], env=key_env)
    [sdist] = (project / "dist").glob("*.tar.gz")
    with tarfile.open(sdist) as tf:
        members = tf.getnames()
    assert "acme_vision-1.0.0/pyproject.toml" in members
    assert [m for m in members if "/models/" in m or m.endswith("/models")] == []



@pytest.mark.slow
def test_product_example_with_hatch_build(plugin_wheel_dir: Path, tmp_path: Path, key_env: dict[str, str]) -> None:
    """Step 2 as the README writes it: `hatch build` makes the sdist (no models) and the wheel (encrypted)."""
    project, models, _ = example_project(tmp_path)
    env = {
        **key_env,
        "UV_FIND_LINKS": str(plugin_wheel_dir),  # hatch's build environments come from uv
        "UV_NO_PROGRESS": "1",
        "HATCH_DATA_DIR": str(tmp_path / "hatch-data"),
    }
    out = tmp_path / "dist"
    run([str(Path(sys.executable).parent / "hatch"), "build", str(out)], cwd=project, env=env)
    assert sorted(p.name for p in out.iterdir()) == ["acme_vision-1.0.0-py3-none-any.whl", "acme_vision-1.0.0.tar.gz"]
    with tarfile.open(out / "acme_vision-1.0.0.tar.gz") as tf:
        assert [m for m in tf.getnames() if "/models" in m] == []
    names = zipfile.ZipFile(out / "acme_vision-1.0.0-py3-none-any.whl").namelist()
    assert all(f"acme_vision/_ovcrypt/models/{name}" in "\n".join(names) for name in models)

# --- installing the plugin ---------------------------------------------------------------------------------------


def plugin_requirements() -> list[str]:
    """Each `hatch-ovcrypt…` requirement that the README's "Installing the plugin" table quotes."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Installing the plugin") :].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [r for row in rows for r in re.findall(r'`"(hatch-ovcrypt[^"`]*)"`', row)]


def test_install_table_requirements_are_pep_508() -> None:
    from packaging.requirements import Requirement

    requirements = [Requirement(r) for r in plugin_requirements()]
    assert {r.name for r in requirements} == {"hatch-ovcrypt"}
    assert all(r.extras == {"genai"} for r in requirements)
    urls = [r.url for r in requirements if r.url]
    assert urls and all(re.search(r"\.whl#sha256=", url) for url in urls), urls
    assert all(str(r.specifier) == f"=={__version__}" for r in requirements if not r.url)


@pytest.mark.parametrize("front_end", ["build", "uv"])
def test_a_direct_url_with_the_wrong_hash_is_refused(
    plugin_wheel_dir: Path, tmp_path: Path, key_env: dict[str, str], front_end: str
) -> None:
    """The README's claim for the direct-URL form: a wheel that does not match its #sha256= is not installed."""
    from uv import find_uv_bin

    [url_form] = [r for r in plugin_requirements() if " @ " in r]
    wheel = only_wheel(plugin_wheel_dir)
    wrong = hashlib.sha256(wheel.read_bytes() + b"tampered").hexdigest()
    requirement = re.sub(r"@ \S+", f"@ {wheel.as_uri()}#sha256={wrong}", url_form)
    project, _, _ = example_project(tmp_path)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(re.sub(r'"hatch-ovcrypt\[genai\]==[^"]*"', f'"{requirement}"', pyproject.read_text()))
    assert requirement in pyproject.read_text()
    if front_end == "build":
        result = build_wheel(project, key_env, isolated=True, check=False)
        refusal = "DO NOT MATCH THE HASHES"
    else:
        cmd = [str(find_uv_bin()), "build", "--python", sys.executable, "--wheel", str(project)]
        result = run(cmd, env={**key_env, "UV_NO_PROGRESS": "1"}, check=False)
        refusal = "Hash mismatch"
    assert result.returncode != 0
    assert refusal in result.stdout + result.stderr
    assert not list((project / "dist").glob("*.whl"))
