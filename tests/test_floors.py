"""The declared version floors are the tested ones: one list, and a build and a load on exactly those versions."""

from __future__ import annotations

import os
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from hatch_ovcrypt.requirements import PLUGIN_REQUIREMENTS, RUNTIME_REQUIREMENTS, floor_pins, genai_requirements
from tests.helpers import REPO, make_ir, only_wheel, run, write_product
from tests.platforms import venv_python

PLAIN_AND_ENCRYPTED = """
import sys
import numpy as np
import openvino as ov
import cryptography
from acme_vision._ovcrypt import compile_model

x = np.random.default_rng(123).standard_normal((1, 64)).astype(np.float32)
plain = ov.Core().compile_model(sys.argv[1], "CPU")(x)[0]
assert np.array_equal(compile_model("detector")(x)[0], plain)
print(ov.__version__.split("-")[0], cryptography.__version__, np.__version__)
"""


def test_pyproject_declares_exactly_the_floors_of_requirements_py() -> None:
    from hatchling.metadata.core import ProjectMetadata

    declared = sorted(str(Requirement(r)) for r in ProjectMetadata(str(REPO), None).core.dependencies)
    assert declared == sorted(str(Requirement(r)) for r in (*RUNTIME_REQUIREMENTS, *PLUGIN_REQUIREMENTS))
    for requirement in map(Requirement, (*RUNTIME_REQUIREMENTS, *PLUGIN_REQUIREMENTS)):
        (spec,) = requirement.specifier  # one floor each, nothing else: that is what the floor test installs
        assert spec.operator == ">=", requirement


def test_genai_requirements_follow_openvinos_release() -> None:
    assert genai_requirements("2026.4.1-22982-e213a147257-releases/2026/4") == [
        "openvino-genai~=2026.4.1",
        "openvino-tokenizers~=2026.4.1",
    ]
    assert genai_requirements("2025.0.0") == ["openvino-genai~=2025.0.0", "openvino-tokenizers~=2025.0.0"]
    assert genai_requirements("2024.6") == ["openvino-genai~=2024.6.0", "openvino-tokenizers~=2024.6.0"]


@pytest.mark.slow
def test_build_and_load_on_exactly_the_declared_floors(plugin_wheel_dir: Path, tmp_path: Path) -> None:
    """A fresh environment with exactly the floors of openvino, cryptography, numpy, hatchling and packaging."""
    env_dir = tmp_path / "floors"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(venv_python(env_dir))
    pip = [python, "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "install", *floor_pins()])
    run([*pip, "install", "--no-deps", str(only_wheel(plugin_wheel_dir))])
    run([*pip, "check"])  # the floors are consistent with each other and with hatch-ovcrypt's requirements

    project = write_product(tmp_path / "product", {"detector": "models/detector.xml"})
    xml = make_ir(project / "models/detector.xml", 64 << 10, seed=5)
    key_env = {"OVCRYPT_KEY": "5a" * 32}
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(project)], env=key_env)
    run([*pip, "install", "--no-deps", str(only_wheel(tmp_path / "dist"))])
    versions = run([python, "-c", PLAIN_AND_ENCRYPTED, str(xml)], env=key_env, cwd=tmp_path).stdout.split()
    floors = {Requirement(r).name: Version(str(Requirement(r).specifier)[2:]) for r in RUNTIME_REQUIREMENTS}
    assert [Version(v).release[:2] for v in versions] == [
        (*floors[name].release, 0)[:2] for name in ("openvino", "cryptography", "numpy")
    ], versions


ZIP64 = """
import sys, zipfile
from pathlib import Path
zipfile.ZIP64_LIMIT = 1 << 20  # stands in for 4 GiB: the code paths are the same, the file stays small
from hatchling.builders.wheel import WheelBuilder

(wheel,) = WheelBuilder(sys.argv[1]).build(directory=sys.argv[2], versions=["standard"])
with zipfile.ZipFile(wheel) as zf:
    print(zf.getinfo("big/weights.ovc").file_size)
"""


@pytest.mark.slow
def test_the_hatchling_floor_writes_zip64_entries(tmp_path: Path) -> None:
    """Issue 18: hatchling before 1.26 sets no entry size, so zipfile refuses an entry over the Zip64 limit
    (4 GiB) after it was written: `File size too large, try using force_zip64`. The floor must write it."""
    env_dir = tmp_path / "floor"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(venv_python(env_dir))
    floors = [r.replace(">=", "==") for r in PLUGIN_REQUIREMENTS]
    run([python, "-m", "pip", "--disable-pip-version-check", "-q", "install", *floors])
    project = tmp_path / "p"
    (project / "src" / "big").mkdir(parents=True)
    (project / "src" / "big" / "__init__.py").write_text("")
    size = (1 << 20) + 4096
    (project / "src" / "big" / "weights.ovc").write_bytes(os.urandom(size))
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "big"\nversion = "1"\n\n[tool.hatch.build.targets.wheel]\npackages = ["src/big"]\n'
    )
    out = run([python, "-c", ZIP64, str(project), str(tmp_path / "dist")])
    assert int(out.stdout) == size
