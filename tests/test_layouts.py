"""Every layout hatchling builds: where `_ovcrypt` lands, that the product imports it, and the plaintext checks.

Layouts from hatchling's wheel-target options: `packages`, automatic detection (flat, src, single module),
`only-include` with `sources` (a list, a prefix removed, a prefix rewritten), PEP 420 namespace packages,
nested packages, and `force-include` with `bypass-selection`.
"""

from __future__ import annotations

import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import (
    RUNTIME_DEPENDENCIES,
    build_wheel,
    make_ir,
    only_wheel,
    reference_output,
    run,
    sample_input,
    unpack,
)
from tests.venvs import Venv

LOCATION = "tool.hatch.build.targets.wheel.hooks.ovcrypt"


@dataclass(frozen=True)
class Layout:
    wheel_toml: str  # the wheel target's tables, as a user writes them
    files: tuple[str, ...]  # Python files of the project (empty)
    runtime: str  # the package that must get `_ovcrypt`
    hook_options: str = ""
    product: str = ""  # a module of the product that must import from the wheel, besides the runtime


LAYOUTS = {
    "src-packages": Layout(
        '[tool.hatch.build.targets.wheel]\npackages = ["src/acme_vision"]',
        ("src/acme_vision/__init__.py",),
        "acme_vision",
        product="acme_vision",
    ),
    "flat-detected": Layout(
        "", ("acme_vision/__init__.py", "acme_vision/util.py"), "acme_vision", product="acme_vision.util"
    ),
    "src-detected": Layout("", ("src/acme_vision/__init__.py",), "acme_vision", product="acme_vision"),
    "only-include-sources-list": Layout(
        '[tool.hatch.build.targets.wheel]\nonly-include = ["src/acme_vision"]\nsources = ["src"]',
        ("src/acme_vision/__init__.py",),
        "acme_vision",
        product="acme_vision",
    ),
    "sources-prefix-removed": Layout(
        '[tool.hatch.build.targets.wheel]\nonly-include = ["src"]\nsources = { "src" = "" }',
        ("src/acme_vision/__init__.py",),
        "acme_vision",
        product="acme_vision",
    ),
    "sources-prefix-rewritten": Layout(
        '[tool.hatch.build.targets.wheel]\nonly-include = ["lib"]\nsources = { "lib" = "acme_vision" }',
        ("lib/__init__.py", "lib/util.py"),
        "acme_vision",
        product="acme_vision.util",
    ),
    "namespace-package": Layout(
        '[tool.hatch.build.targets.wheel]\npackages = ["src/acme"]',
        ("src/acme/vision/__init__.py",),
        "acme.vision",
        product="acme.vision",
    ),
    "namespace-only-include": Layout(
        '[tool.hatch.build.targets.wheel]\nonly-include = ["src/acme/vision"]\nsources = ["src"]',
        ("src/acme/vision/__init__.py", "src/acme/vision/io/__init__.py"),
        "acme.vision",
        product="acme.vision.io",
    ),
    "nested-package": Layout(
        '[tool.hatch.build.targets.wheel]\npackages = ["src/acme_vision"]',
        ("src/acme_vision/__init__.py", "src/acme_vision/engine/__init__.py"),
        "acme_vision.engine",
        hook_options='package = "acme_vision.engine"',
        product="acme_vision",
    ),
    "force-include": Layout(
        '[tool.hatch.build.targets.wheel]\nbypass-selection = true\nexclude = ["/code"]\n\n'
        '[tool.hatch.build.targets.wheel.force-include]\n"code/acme_vision" = "acme_vision"',
        ("code/acme_vision/__init__.py",),
        "acme_vision",
        product="acme_vision",
    ),
    "single-module": Layout(
        "",
        ("acme_vision.py",),
        "acme_vision_models",
        hook_options='package = "acme_vision_models"',
        product="acme_vision",
    ),
}


def write_layout(root: Path, layout: Layout, model: str = "models/m.xml") -> Path:
    for name in layout.files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    (root / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["hatchling", "hatch-ovcrypt"]
build-backend = "hatchling.build"

[project]
name = "acme-vision"
version = "1.0.0"
dependencies = [{RUNTIME_DEPENDENCIES}]

{layout.wheel_toml}

[tool.hatch.build.targets.sdist]
exclude = ["/models"]

[tool.hatch.build.targets.wheel.hooks.ovcrypt]
models = {{ m = "{model}" }}
{layout.hook_options}
"""
    )
    make_ir(root / model)
    return root


RUN = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
runtime = importlib.import_module(sys.argv[2] + "._ovcrypt")
if sys.argv[3]:
    importlib.import_module(sys.argv[3])
x = np.random.default_rng(123).standard_normal((1, 64)).astype(np.float32)
print(json.dumps({"models": runtime.model_names(), "out": runtime.compile_model("m")(x)[0].tolist(),
                  "file": runtime.__file__}))
"""


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_builds_and_imports(name: str, tmp_path: Path, key_env: dict[str, str]) -> None:
    layout = LAYOUTS[name]
    project = write_layout(tmp_path / "p", layout)
    build_wheel(project, key_env)
    wheel = only_wheel(project / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    folder = layout.runtime.replace(".", "/") + "/_ovcrypt"
    assert [n for n in names if n.endswith("/manifest.json")] == [f"{folder}/manifest.json"], names
    assert f"{folder}/__init__.py" in names
    assert not [n for n in names if n.endswith((".xml", ".bin"))]
    site = unpack(wheel, tmp_path / "site")  # a pure wheel installs as it is unpacked
    out = json.loads(run([sys.executable, "-c", RUN, str(site), layout.runtime, layout.product], env=key_env).stdout)
    assert out["models"] == ["m"] and out["file"].startswith(str(site / folder))
    assert out["out"] == reference_output(project / "models/m.xml", sample_input()).tolist()


@pytest.mark.parametrize("name", ["namespace-package", "single-module"])
def test_layout_editable_install(name: str, tmp_path: Path, key_env: dict[str, str]) -> None:
    layout = LAYOUTS[name]
    project = write_layout(tmp_path / "p", layout)
    env = Venv(tmp_path / "venv")
    env.pip_install("-e", str(project), env=key_env)
    code = RUN.replace("sys.path.insert(0, sys.argv[1])", "")
    out = json.loads(run([str(env.python), "-c", code, "", layout.runtime, layout.product], env=key_env).stdout)
    assert out["out"] == reference_output(project / "models/m.xml", sample_input()).tolist()
    assert out["file"].startswith(str(env.site_packages)), "the runtime comes from the encrypted copy"
    assert not list(project.rglob("_ovcrypt")), "the editable build wrote into the source tree"


@pytest.mark.parametrize(
    ("name", "model", "message"),
    [
        (
            "sources-prefix-rewritten",
            "lib/models/m.xml",
            "file lib/models/m.xml would be packed into the wheel as acme_vision/models/m.xml through the entry "
            '"lib" of `tool.hatch.build.targets.wheel.only-include`: add `exclude = ["/lib/models"]`',
        ),
        (
            "force-include",
            "code/acme_vision/models/m.xml",
            "file code/acme_vision/models/m.xml would be packed into the wheel as acme_vision/models/m.xml through "
            'the entry "code/acme_vision" of `tool.hatch.build.targets.wheel.force-include`: remove it',
        ),
    ],
)
def test_plaintext_check_follows_the_layout(
    name: str, model: str, message: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    project = write_layout(tmp_path / "p", LAYOUTS[name], model=model)
    result = build_wheel(project, key_env, check=False)
    assert result.returncode != 0
    assert f"`{LOCATION}.models.m` {message}" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "hook_options", "message"),
    [
        ("single-module", "", 'the wheel has no package, only acme_vision.py; name a new package for the runtime, '
         'such as `package = "acme_vision_models"`'),
        ("single-module", 'package = "acme_vision"', "but acme_vision.py is a module of the wheel"),
        ("namespace-package", 'package = "acme.audio"', "names 'acme.audio', which the wheel does not contain "
         "(it has: acme, acme.vision)"),
    ],
)  # fmt: skip
def test_package_errors_name_the_layout(
    name: str, hook_options: str, message: str, tmp_path: Path, key_env: dict[str, str]
) -> None:
    layout = LAYOUTS[name]
    project = write_layout(tmp_path / "p", Layout(layout.wheel_toml, layout.files, layout.runtime, hook_options))
    result = run([sys.executable, "-m", "hatch_ovcrypt", "check", str(project)], env=key_env, check=False)
    assert result.returncode == 1
    assert f"`{LOCATION}.package` " in result.stderr and message in result.stderr, result.stderr
