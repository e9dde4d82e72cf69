"""Issue 9, item 7: the plaintext check covers every way a file reaches the wheel, and names the entry.

Selected files (packages, only-include, artifacts), target and global force-include (a folder counts for
every file under it), shared-data, shared-scripts, extra-metadata, sbom-files, license-files, and the
build data of other build hooks: those that run before hatch-ovcrypt are caught before anything is
encrypted, those that run after it when the wheel is checked at the end (which also compares every
member of the wheel with the plaintext model files).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_ir, run, write_product
from tests.test_config import output_of_failed_build

TARGET = "tool.hatch.build.targets.wheel"


def project_with(root: Path, *, model: str = "models/m.xml", toml: str = "",
                 edits: tuple[tuple[str, str], ...] = ()) -> Path:  # fmt: skip
    project = write_product(root, {"m": model}, extra_toml=toml)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    pyproject.write_text(text)
    make_ir(project / model)
    return project


def problems_of(project: Path, key_env: dict[str, str], build_data: dict[str, Any] | None = None) -> list[str]:
    from hatchling.builders.wheel import WheelBuilder

    from hatch_ovcrypt.checks.project import check_project, hook_table

    builder = WheelBuilder(str(project))
    table = hook_table(builder)
    assert table is not None
    plan, problems = check_project(table, project, builder, key_env, build_data=build_data)
    wheel = [str(p) for p in problems if "into the wheel" in str(p)]
    assert plan is None and wheel, problems
    return wheel


PACKAGES = 'packages = ["src/acme_vision"]'
CASES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "target force-include, a file": (
        {"toml": f'[{TARGET}.force-include]\n"models/m.bin" = "acme_vision/m.bin"\n'},
        [f'm.bin would be packed into the wheel as acme_vision/m.bin through the entry "models/m.bin" of '
         f"`{TARGET}.force-include`"],
    ),
    "target force-include, a folder": (
        {"toml": f'[{TARGET}.force-include]\n"models" = "acme_vision/models"\n'},
        [f'm.xml would be packed into the wheel as acme_vision/models/m.xml through the entry "models" of '
         f"`{TARGET}.force-include`", "acme_vision/models/m.bin through the entry \"models\""],
    ),
    "global force-include": (
        {"toml": '[tool.hatch.build.force-include]\n"./models/" = "data"\n'},
        ['data/m.bin through the entry "./models/" of `tool.hatch.build.force-include`', "data/m.xml"],
    ),
    "shared-data": (
        {"toml": f'[{TARGET}.shared-data]\n"models" = "share/acme"\n'},
        [f'acme_vision-1.0.0.data/data/share/acme/m.bin through the entry "models" of `{TARGET}.shared-data`'],
    ),
    "shared-scripts": (
        {"toml": f'[{TARGET}.shared-scripts]\n"models/m.xml" = "m.xml"\n'},
        [f'acme_vision-1.0.0.data/scripts/m.xml through the entry "models/m.xml" of `{TARGET}.shared-scripts`'],
    ),
    "extra-metadata": (
        {"toml": f'[{TARGET}.extra-metadata]\n"models" = "models"\n'},
        [f'dist-info/extra_metadata/models/m.bin through the entry "models" of `{TARGET}.extra-metadata`'],
    ),
    "sbom-files": (
        {"edits": ((PACKAGES, f'{PACKAGES}\nsbom-files = ["models/m.bin"]'),)},
        [f'dist-info/sboms/m.bin through the entry "models/m.bin" of `{TARGET}.sbom-files`'],
    ),
    "license-files": (
        {"edits": (('version = "1.0.0"', 'version = "1.0.0"\nlicense-files = ["models/m.xml"]'),)},
        ["dist-info/licenses/models/m.xml as a license file (`project.license-files`)"],
    ),
    "target artifacts": (
        {"model": "src/acme_vision/models/m.xml",
         "edits": ((PACKAGES, f'{PACKAGES}\nexclude = ["/src/acme_vision/models"]\nartifacts = ["*.bin"]'),)},
        [f'acme_vision/models/m.bin through the pattern "*.bin" of `{TARGET}.artifacts` (artifacts are packed '
         "even when excluded)"],
    ),
    "global artifacts": (
        {"model": "src/acme_vision/models/m.xml",
         "edits": ((f"[{TARGET}]\n{PACKAGES}", '[tool.hatch.build]\nartifacts = ["/src/acme_vision/models/m.xml"]\n\n'
                    f'[{TARGET}]\n{PACKAGES}\nexclude = ["/src/acme_vision/models"]'),)},
        ['acme_vision/models/m.xml through the pattern "/src/acme_vision/models/m.xml" of '
         "`tool.hatch.build.artifacts`"],
    ),
    "only-include": (
        {"edits": ((PACKAGES, 'only-include = ["src/acme_vision", "models"]\nsources = ["src"]'),)},
        [f'models/m.bin through the entry "models" of `{TARGET}.only-include`: add `exclude = ["/models"]`'],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_every_way_into_the_wheel_is_named(tmp_path: Path, key_env: dict[str, str], case: str) -> None:
    setup, expected = CASES[case]
    problems = problems_of(project_with(tmp_path, **setup), key_env)
    text = "\n".join(problems)
    for part in expected:
        assert part in text, f"{part!r} not in:\n{text}"
    assert all(p.startswith("`tool.hatch.build.targets.wheel.hooks.ovcrypt.models.m` file ") for p in problems)


def test_build_data_of_earlier_hooks_is_named(tmp_path: Path, key_env: dict[str, str]) -> None:
    project = project_with(tmp_path, model="src/acme_vision/models/m.xml",
                           edits=((PACKAGES, f'{PACKAGES}\nexclude = ["/src/acme_vision/models"]'),))  # fmt: skip
    build_data = {
        "force_include": {"src/acme_vision/models": "extra"},
        "artifacts": ["/src/acme_vision/models/m.xml"],
        "shared_data": {"src/acme_vision/models/m.bin": "m.bin"},
        "shared_scripts": {},
        "extra_metadata": {"src/acme_vision/models/m.xml": "m.xml"},
        "sbom_files": ["src/acme_vision/models/m.bin"],
    }
    text = "\n".join(problems_of(project, key_env, build_data))
    for part in (
        "as extra/m.bin through the force-include entry \"src/acme_vision/models\" that a build hook put into "
        "build_data['force_include']",
        "through the artifacts pattern \"/src/acme_vision/models/m.xml\" that a build hook put into "
        "build_data['artifacts']",
        "data/data/m.bin through the shared-data entry \"src/acme_vision/models/m.bin\" that a build hook put into "
        "build_data['shared_data']",
        "extra_metadata/m.xml through the extra-metadata entry",
        "sboms/m.bin through the sbom_files entry",
    ):
        assert part in text, f"{part!r} not in:\n{text}"


# --- real builds --------------------------------------------------------------------------------


def test_force_included_models_fail_the_build_and_check(tmp_path: Path, key_env: dict[str, str]) -> None:
    """The issue's case: a product that force-includes its models, then adds the hook."""
    project = project_with(tmp_path, toml=f'[{TARGET}.force-include]\n"models" = "acme_vision/models"\n')
    out = output_of_failed_build(project, key_env)
    assert f'through the entry "models" of `{TARGET}.force-include`: remove it' in out
    check = run([sys.executable, "-m", "hatch_ovcrypt", "check", str(project)], env=key_env, check=False)
    assert check.returncode == 1 and f'the entry "models" of `{TARGET}.force-include`' in check.stderr


HOOK = textwrap.dedent(
    """
    import shutil
    from pathlib import Path

    from hatchling.builders.hooks.plugin.interface import BuildHookInterface


    class CustomBuildHook(BuildHookInterface):
        def initialize(self, version, build_data):
            if self.config["mode"] == "force-include":
                build_data["force_include"]["models/m.bin"] = "acme_vision/weights.bin"
            else:  # a copy under another name, which no configuration names
                shutil.copyfile(Path(self.root, "models/m.bin"), Path(self.root, "src/acme_vision/weights.dat"))
    """
)


@pytest.mark.parametrize(
    ("table", "mode", "expected"),
    [
        ("tool.hatch.build.hooks.custom", "force-include",  # global hooks run before the target's
         "as acme_vision/weights.bin through the force-include entry \"models/m.bin\" that a build hook put into "
         "build_data['force_include']"),
        (f"{TARGET}.hooks.custom", "force-include",  # after hatch-ovcrypt: found when the wheel is checked
         "as acme_vision/weights.bin through the force-include entry \"models/m.bin\" that a build hook put into "
         "build_data['force_include']"),
        (f"{TARGET}.hooks.custom", "copy",
         "file models/m.bin is in the built wheel as acme_vision/weights.dat, put there in a way that hatch-ovcrypt "
         "cannot name"),
    ],
    ids=["hook-before", "hook-after", "hook-after-copy"],
)
def test_other_hooks_cannot_slip_a_model_in(
    tmp_path: Path, key_env: dict[str, str], table: str, mode: str, expected: str
) -> None:
    project = project_with(tmp_path, toml=f'[{table}]\nmode = "{mode}"\n')
    (project / "hatch_build.py").write_text(HOOK)
    out = output_of_failed_build(project, key_env)
    assert expected in out, out[-3000:]


# --- the sdist (issue 17, item 1) ------------------------------------------------------------------

EXCLUDE = '[tool.hatch.build.targets.sdist]\nexclude = ["/models"]\n'


def test_a_wheel_from_an_sdist_that_holds_the_models_fails_and_says_the_sdist_leaked_them(
    tmp_path: Path, key_env: dict[str, str]
) -> None:
    """Plain `python -m build` builds the sdist (no hook ran: wheel-target table), then the wheel from it."""
    project = project_with(tmp_path / "p", edits=((EXCLUDE, ""),))
    dist = tmp_path / "dist"
    result = run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(project)],
                 env=key_env, check=False)  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode != 0 and not list(dist.glob("*.whl")), out
    assert (
        "`tool.hatch.build.targets.wheel.hooks.ovcrypt.models.m` 2 files in models/ came out of the sdist this wheel "
        "is built from, so that sdist leaked the plaintext models: delete it, then add "
        '`exclude = ["/models"]` under [tool.hatch.build.targets.sdist]'
    ) in out
    assert "configure the hook as [tool.hatch.build.hooks.ovcrypt] (for every target)" in out
    assert f"hatch-ovcrypt: removed the sdist {dist / 'acme_vision-1.0.0.tar.gz'}: it holds" in out
    assert not list(dist.glob("*.tar.gz")), "the plaintext sdist was left ready for upload"
    # On purpose: the wheel from such an sdist builds.
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text.replace("[tool.hatch.build.targets.wheel.hooks.ovcrypt]\n",
                                                         "[tool.hatch.build.targets.wheel.hooks.ovcrypt]\n"
                                                         "allow-plaintext-sdist = true\n"))  # fmt: skip
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(project)], env=key_env)
    assert len(list(dist.glob("*.whl"))) == 1


def test_check_and_the_build_warn_when_the_sdist_build_does_not_run_the_hook(
    tmp_path: Path, key_env: dict[str, str]
) -> None:
    project = project_with(tmp_path / "p")
    warning = "the sdist build does not run hook `ovcrypt` (it is configured for the wheel target only)"
    check = run([sys.executable, "-m", "hatch_ovcrypt", "check", str(project)], env=key_env)
    assert f"warning: {warning}" in check.stderr and "[tool.hatch.build.hooks.ovcrypt]" in check.stderr
    build = run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "d"),
                 str(project)], env=key_env)  # fmt: skip
    assert f"hatch-ovcrypt: warning: {warning}" in build.stdout + build.stderr
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(
        text.replace("[tool.hatch.build.targets.wheel.hooks.ovcrypt]", "[tool.hatch.build.hooks.ovcrypt]")
    )
    assert "warning" not in run([sys.executable, "-m", "hatch_ovcrypt", "check", str(project)], env=key_env).stderr
