"""Fitting the packaging ecosystem: static metadata that installers can trust, and real installs with uv."""

from __future__ import annotations

import json
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

from hatch_ovcrypt.checks.dependencies import check_runtime_dependencies, uv_cache_keys_hint
from hatch_ovcrypt.requirements import RUNTIME_REQUIREMENTS
from tests.helpers import (
    REPO,
    RUNTIME_DEPENDENCIES,
    build_wheel,
    make_ir,
    only_wheel,
    reference_output,
    run,
    sample_input,
    write_product,
)
from tests.platforms import venv_python

LOCATION = "tool.hatch.build.targets.wheel.hooks.ovcrypt"
INFER = """
import json
import numpy as np
from acme_vision._ovcrypt import compile_model
x = np.random.default_rng(123).standard_normal((1, 64)).astype(np.float32)
print(json.dumps(compile_model("detector")(x)[0].tolist()))
"""


def suggested_line(message: str) -> list[str]:
    """The `dependencies = [...]` line a message tells the user to write, parsed (TOML arrays of strings are JSON)."""
    line = message.split("Write `", 1)[1].split("`", 1)[0]
    assert line.startswith("dependencies = [")
    value: list[str] = json.loads(line.split("=", 1)[1])
    return value


def uv() -> str:
    from uv import find_uv_bin

    return str(find_uv_bin())


# --- static metadata must name the runtime's requirements ----------------------------------------


def test_missing_runtime_requirements_give_the_exact_line_to_write() -> None:
    (problem,) = check_runtime_dependencies(["pillow>=10", 'tomli; python_version < "3.11"'], [], False, LOCATION)
    assert problem.path == "project.dependencies"
    assert "does not list openvino, cryptography, numpy" in problem.message
    assert f"the runtime that `{LOCATION}` puts into the wheel" in problem.message
    assert "uv" in problem.message and 'list "dependencies" in [project] `dynamic`' in problem.message
    assert suggested_line(problem.message) == ["pillow>=10", 'tomli; python_version < "3.11"', *RUNTIME_REQUIREMENTS]


def test_declared_requirements_are_matched_by_normalized_name() -> None:
    declared = ["OpenVINO==2026.4.1", "Cryptography[ssh]>=44; sys_platform != 'win32'"]
    (problem,) = check_runtime_dependencies(declared, [], False, LOCATION)
    assert "does not list numpy, which" in problem.message and "without it." in problem.message
    assert suggested_line(problem.message) == [*declared, "numpy>=1.24"]
    assert check_runtime_dependencies([*declared, "numpy"], [], False, LOCATION) == []


def test_dynamic_dependencies_are_left_to_the_build() -> None:
    assert check_runtime_dependencies([], ["version", "dependencies"], True, LOCATION) == []


def test_folder_models_also_need_genai_of_openvinos_release() -> None:
    from importlib.metadata import version

    release = ".".join(version("openvino").split(".")[:3])
    (problem,) = check_runtime_dependencies(list(RUNTIME_REQUIREMENTS), [], True, LOCATION)
    assert "does not list openvino-genai, openvino-tokenizers" in problem.message
    assert suggested_line(problem.message)[-2:] == [f"openvino-genai~={release}", f"openvino-tokenizers~={release}"]
    assert "own YYYY.R release" in problem.message
    declared = [*RUNTIME_REQUIREMENTS, "openvino-genai", "openvino_tokenizers[transformers]"]
    assert check_runtime_dependencies(declared, [], True, LOCATION) == []


def test_build_and_check_refuse_incomplete_static_dependencies(tmp_path: Path, key_env: dict[str, str]) -> None:
    project = write_product(tmp_path / "p", {"detector": "models/detector.xml"}, dependencies='"numpy"')
    make_ir(project / "models/detector.xml")
    result = build_wheel(project, key_env, check=False)
    assert result.returncode != 0 and not list((project / "dist").glob("*.whl"))
    expected = '`dependencies = ["numpy", "openvino>=2024.0", "cryptography>=43"]` under [project]'
    assert "`project.dependencies` does not list openvino, cryptography," in result.stderr + result.stdout
    assert expected in result.stderr + result.stdout
    check = run([sys.executable, "-m", "hatch_ovcrypt", "check", str(project)], env=key_env, check=False)
    assert check.returncode == 1 and expected in check.stderr

    text = (project / "pyproject.toml").read_text().replace('dependencies = ["numpy"]', 'dynamic = ["dependencies"]')
    (project / "pyproject.toml").write_text(text)
    build_wheel(project, key_env)
    with zipfile.ZipFile(only_wheel(project / "dist")) as zf:
        metadata = zf.read("acme_vision-1.0.0.dist-info/METADATA").decode()
    assert [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")] == [
        f"Requires-Dist: {r}" for r in RUNTIME_REQUIREMENTS
    ]


def test_a_folder_model_needs_genai_of_openvinos_release(tmp_path: Path, key_env: dict[str, str]) -> None:
    import shutil

    from hatch_ovcrypt.requirements import genai_requirements

    genai = genai_requirements(version("openvino"))
    project = write_product(tmp_path / "p", {"assistant": "models/assistant"}, dependencies=RUNTIME_DEPENDENCIES)
    shutil.copytree(REPO / "tests" / "fixtures" / "tiny_llm", project / "models" / "assistant")
    check = run([sys.executable, "-m", "hatch_ovcrypt", "check", str(project)], env=key_env, check=False)
    assert check.returncode == 1
    assert "`project.dependencies` does not list openvino-genai, openvino-tokenizers" in check.stderr
    assert ", ".join(f'"{r}"' for r in genai) + "]` under [project]" in check.stderr
    text = (project / "pyproject.toml").read_text()
    dynamic = text.replace(f"dependencies = [{RUNTIME_DEPENDENCIES}]", 'dynamic = ["dependencies"]')
    (project / "pyproject.toml").write_text(dynamic)
    build_wheel(project, key_env)
    with zipfile.ZipFile(only_wheel(project / "dist")) as zf:
        metadata = zf.read("acme_vision-1.0.0.dist-info/METADATA").decode()
    assert [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")] == [
        f"Requires-Dist: {r}" for r in (*RUNTIME_REQUIREMENTS, *genai)
    ]


# --- real uv ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_uv_installs_a_product_from_source_into_a_fresh_venv_and_it_runs(
    plugin_wheel_dir: Path, tmp_path: Path, key_env: dict[str, str]
) -> None:
    """`uv pip install -e DIR`: uv resolves the product's requirements from its static pyproject metadata."""
    project = write_product(tmp_path / "p", {"detector": "models/detector.xml"})
    xml = make_ir(project / "models/detector.xml", 64 << 10, seed=6)
    env = tmp_path / "venv"
    run([uv(), "venv", "--quiet", "--python", sys.executable, str(env)])
    python = str(venv_python(env))
    uv_env = {**key_env, "UV_FIND_LINKS": str(plugin_wheel_dir), "UV_NO_PROGRESS": "1"}
    run([uv(), "pip", "install", "--python", python, "-e", str(project)], env=uv_env)
    freeze = run([uv(), "pip", "freeze", "--python", python]).stdout
    for name in ("openvino==", "cryptography==", "numpy==", f"-e file://{project}"):
        assert any(line.lower().startswith(name.lower()) for line in freeze.splitlines()), (name, freeze)
    assert "hatch-ovcrypt" not in freeze, "the product must not need the plugin at run time"
    out = run([python, "-c", INFER], env=key_env, cwd=tmp_path)
    got = json.loads(out.stdout)
    assert got == reference_output(xml, sample_input()).tolist()


# --- uv's cache of editable builds ----------------------------------------------------------------


def model_files(project: Path, *xmls: str) -> list[Path]:
    return [project / p for xml in xmls for p in (xml, xml.replace(".xml", ".bin"))]


def apply_hint(project: Path, hint: str) -> None:
    pyproject = project / "pyproject.toml"
    if hint.startswith("[tool.uv]"):
        pyproject.write_text(pyproject.read_text() + "\n" + hint + "\n")
    else:
        text = pyproject.read_text()
        head, table, tail = text.partition("[tool.uv]\n")
        tail = "\n".join(line for line in tail.splitlines() if not line.startswith("cache-keys"))
        pyproject.write_text(head + table + hint + "\n" + tail + "\n")


def test_uv_cache_keys_hint_covers_the_model_files(tmp_path: Path) -> None:
    project = write_product(tmp_path, {"d": "models/d.xml", "c": "models/cls/c.xml"})
    files = model_files(project, "models/d.xml", "models/cls/c.xml")
    hint = uv_cache_keys_hint(project, files)
    assert hint == '[tool.uv]\ncache-keys = [{ file = "pyproject.toml" }, { file = "models/**" }]'
    apply_hint(project, hint)
    assert uv_cache_keys_hint(project, files) is None


@pytest.mark.parametrize(
    ("uv_table", "expected"),
    [
        (
            "[tool.uv]\npackage = true\n",
            'cache-keys = [{ file = "pyproject.toml" }, { file = "models/**" }, { file = "top.xml" }, '
            '{ file = "top.bin" }]  # in the existing [tool.uv]',
        ),
        (
            '[tool.uv]\ncache-keys = [{ git = { commit = true } }, "setup.cfg", { file = "models/*.xml" }]\n',
            'cache-keys = [{ git = { commit = true } }, "setup.cfg", { file = "models/*.xml" }, '
            '{ file = "models/**" }, { file = "top.xml" }, { file = "top.bin" }]  # replaces cache-keys in the '
            "existing [tool.uv]",
        ),
        ('[tool.uv]\ncache-keys = ["pyproject.toml", { file = "**/*.xml" }, { file = "**/*.bin" }]\n', None),
        ('[tool.uv]\ncache-keys = [{ file = "*.[xb][mi][ln]" }, { file = "models/**/*" }]\n', None),
        ('[tool.uv]\ncache-keys = [{ dir = "models" }, { file = "*.xml" }, { file = "*.bin" }]\n', "models/**"),
    ],
)
def test_uv_cache_keys_hint_keeps_what_is_there(tmp_path: Path, uv_table: str, expected: str | None) -> None:
    project = write_product(tmp_path, {"d": "models/d.xml", "t": "top.xml"}, extra_toml=uv_table)
    files = model_files(project, "models/d.xml", "top.xml")
    hint = uv_cache_keys_hint(project, files)
    if expected is None or hint is None:
        assert hint == expected
        return
    assert expected in hint
    apply_hint(project, hint)
    assert uv_cache_keys_hint(project, files) is None, (project / "pyproject.toml").read_text()


@pytest.mark.slow
def test_uv_sync_rebuilds_changed_models_only_with_the_hint(
    plugin_wheel_dir: Path, tmp_path: Path, key_env: dict[str, str]
) -> None:
    """`uv run`/`uv sync` keep a stale encrypted snapshot until [tool.uv] cache-keys covers the models."""
    project = write_product(tmp_path / "p", {"detector": "models/detector.xml"})
    xml = project / "models/detector.xml"
    env = {**key_env, "UV_FIND_LINKS": str(plugin_wheel_dir), "UV_PYTHON": sys.executable, "UV_NO_PROGRESS": "1"}

    def model(seed: int) -> list[object]:
        """Write a new model; return what plain OpenVINO computes from it."""
        make_ir(xml, 64 << 10, seed=seed)
        value: list[object] = reference_output(xml, sample_input()).tolist()
        return value

    def product() -> list[object]:
        """What the product computes under `uv run`."""
        out = run([uv(), "run", "--quiet", "python", "-c", INFER], cwd=project, env=env).stdout
        value: list[object] = json.loads(out)
        return value

    first = model(1)
    run([uv(), "sync", "--quiet"], cwd=project, env=env)
    assert product() == first
    assert model(4) != first and product() == first, "uv rebuilt without cache-keys: is the stale snapshot gone?"
    hint = uv_cache_keys_hint(project, model_files(project, "models/detector.xml"))
    assert hint is not None
    apply_hint(project, hint)
    second = model(2)
    assert product() == second  # pyproject changed: rebuilt
    third = model(3)
    assert product() == third  # only the model changed: rebuilt, thanks to the cache keys


# --- front ends ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_front_ends_hatch_build_and_uv_build(plugin_wheel_dir: Path, tmp_path: Path, key_env: dict[str, str]) -> None:
    """`hatch build` (its build environments come from uv: UV_FIND_LINKS finds a local plugin wheel) and `uv build`."""
    project = write_product(tmp_path / "p", {"detector": "models/detector.xml"})
    make_ir(project / "models/detector.xml")
    hatch = str(Path(sys.executable).parent / "hatch")
    env = {
        **key_env,
        "UV_FIND_LINKS": str(plugin_wheel_dir),
        "UV_NO_PROGRESS": "1",
        "HATCH_DATA_DIR": str(tmp_path / "hatch-data"),  # a fresh build environment, made by uv
    }
    run([hatch, "build", str(tmp_path / "hatch-dist")], cwd=project, env=env)
    names = sorted(p.name for p in (tmp_path / "hatch-dist").iterdir())
    assert names == ["acme_vision-1.0.0-py2.py3-none-any.whl", "acme_vision-1.0.0.tar.gz"]
    assert "acme_vision/_ovcrypt/manifest.json" in zipfile.ZipFile(tmp_path / "hatch-dist" / names[0]).namelist()

    uv_build = [uv(), "build", "--python", sys.executable]
    run([*uv_build, "--wheel", "--out-dir", str(tmp_path / "uv-dist")], cwd=project, env=env)
    assert "acme_vision/_ovcrypt/manifest.json" in zipfile.ZipFile(only_wheel(tmp_path / "uv-dist")).namelist()
    # Plain `uv build` makes the wheel from the sdist, which holds no models: refused, naming the way out.
    sdist_first = run([*uv_build, "--out-dir", str(tmp_path / "uv-both")], cwd=project, env=env, check=False)
    assert sdist_first.returncode != 0
    assert "this is an sdist, and hatch-ovcrypt keeps model files out of sdists" in sdist_first.stderr
    assert "`uv build --wheel`" in sdist_first.stderr


# --- the plugin's own checkout and wheel -----------------------------------------------------------


def test_the_repository_holds_no_symlinks() -> None:
    """A checkout without symlink support (the Windows default) must work: one copy of the runtime, no links."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listing = run(["git", "ls-files", "-s"], cwd=REPO).stdout.splitlines()
    assert [line.split("\t", 1)[1] for line in listing if line.startswith("120000 ")] == []


def test_the_plugin_wheel_ships_the_runtime_sources(plugin_wheel_dir: Path) -> None:
    """runtime/ovcrypt_runtime/ becomes the wheel's top-level `ovcrypt_runtime/`, every module of it."""
    names = zipfile.ZipFile(only_wheel(plugin_wheel_dir)).namelist()
    root = REPO / "runtime" / "ovcrypt_runtime"
    sources = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py"))
    assert "_keys/sources.py" in sources and "__init__.py" in sources and "_keys/holders/age.py" in sources
    shipped = sorted(n for n in names if n.startswith("ovcrypt_runtime/"))
    assert shipped == [f"ovcrypt_runtime/{name}" for name in sources]
    assert not [n for n in names if n.startswith(("runtime/", "hatch_ovcrypt/runtime/"))]
