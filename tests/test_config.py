"""Config, key and packaging errors: every problem reported at once, each with its TOML path, before any work."""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import pytest

from tests.helpers import build_wheel, make_ir, run, write_product

LOCATION = "tool.hatch.build.targets.wheel.hooks.ovcrypt"


def add_hook_option(project: Path, line: str) -> None:
    pyproject = project / "pyproject.toml"
    table = "[tool.hatch.build.targets.wheel.hooks.ovcrypt]\n"
    pyproject.write_text(pyproject.read_text().replace(table, f"{table}{line}\n"))


def output_of_failed_build(project: Path, env: dict[str, str]) -> str:
    result = build_wheel(project, env, check=False)
    assert result.returncode != 0, "the build should have failed"
    assert not list((project / "dist").glob("*.whl")), "a failed build left a wheel behind"
    return result.stdout + result.stderr


def test_every_problem_is_reported_at_once_with_its_toml_path(tmp_path: Path, key_env: dict[str, str]) -> None:
    project = write_product(
        tmp_path,
        {
            "good": "models/good.xml",
            "no_bin": "models/no_bin.xml",
            "missing": "models/missing.xml",
            "2bad": "models/good.xml",
            "broken": "models/broken.xml",
        },
        extra_hook_options='colour = "blue"\nkey-env = 7\nsegment-size = 100\n',
    )
    make_ir(project / "models/good.xml")
    make_ir(project / "models/no_bin.xml").with_suffix(".bin").unlink()
    (project / "models/broken.xml").write_text("<net><layers><oops></net>")
    (project / "models/broken.bin").write_bytes(b"")
    out = output_of_failed_build(project, key_env)
    expected = [
        (f"`{LOCATION}.colour` is not an option of build hook `ovcrypt`", ""),
        (f"`{LOCATION}.key-env` for build hook `ovcrypt` must be a string", ""),
        (f"`{LOCATION}.segment-size` must be a multiple of 4096", ""),
        (f"`{LOCATION}.models.no_bin` names models/no_bin.bin, which does not exist", "beside the .xml"),
        (f"`{LOCATION}.models.missing` names models/missing.xml and models/missing.bin", ""),
        (f"`{LOCATION}.models.2bad` is not a valid model name", "Python identifier"),
        (f"`{LOCATION}.models.broken` OpenVINO cannot read models/broken.xml", ""),
    ]
    for text, detail in expected:
        assert text in out, f"missing {text!r} in:\n{out}"
        assert detail in out
    assert "7 problems to fix before building" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ('"not a table"', f"`{LOCATION}.models` for build hook `ovcrypt` must be a table"),
        ("{}", f"`{LOCATION}.models` must name at least one model"),
        ("{ m = 3 }", f"`{LOCATION}.models.m` must be a path (an IR .xml, a model folder, or a file to convert)"),
        ('{ m = "models/m.onnx" }', f"`{LOCATION}.models.m` names models/m.onnx, which does not exist"),
        ('{ m = { xml = "models/m.onnx" } }', f"`{LOCATION}.models.m.xml` must be a path to an IR .xml file"),
        ('{ m = { folder = "models", kind = "tts" } }', f"`{LOCATION}.models.m.kind` must be one of"),
        ('{ m = { xml = "a.xml", folder = "b" } }', "with exactly one of `xml`, `folder` or `source`"),
        ('{ m = { folder = "models", input = "x" } }', "m.input` does not apply to a model given by `folder`"),
        ('{ m = { source = "m.onnx", compress-to-fp16 = "no" } }', "compress-to-fp16` must be true or false"),
        ('{ m = { xml = "models/m.xml", source-encryption = "rot13" } }', "source-encryption` must be one of"),
        (
            '{ m = { xml = "models/m.xml", source-encryption = "openssl-aes-128-cbc" } }',
            f"`{LOCATION}.models.m.key-hex-env` must name the environment variable",
        ),
    ],
)
def test_model_table_shapes(tmp_path: Path, key_env: dict[str, str], models: str, message: str) -> None:
    project = write_product(tmp_path, {"x": "models/m.xml"})
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text.replace('models = { x = "models/m.xml" }', f"models = {models}"))
    make_ir(project / "models/m.xml")
    from hatchling.builders.wheel import WheelBuilder

    from hatch_ovcrypt.checks.project import check_project, hook_table

    builder = WheelBuilder(str(project))
    table = hook_table(builder)
    assert table is not None
    plan, problems = check_project(table, project, builder, key_env)
    assert plan is None
    assert any(message in str(p) for p in problems), problems


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "names OVCRYPT_KEY, which is not set (nor OVCRYPT_KEY_FILE)"),
        ({"OVCRYPT_KEY": ""}, "environment variable OVCRYPT_KEY is empty"),
        ({"OVCRYPT_KEY": "abc123"}, "environment variable OVCRYPT_KEY is not a key: expected 64 hex characters"),
        ({"OVCRYPT_KEY": "zz" * 32}, "including non-hex ones"),
        ({"OVCRYPT_KEY_FILE": "/nonexistent/key"}, "key file /nonexistent/key does not exist"),
    ],
)
def test_build_key_missing_or_malformed(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    project = write_product(tmp_path, {"m": "models/m.xml"})
    make_ir(project / "models/m.xml")
    out = output_of_failed_build(project, env)
    assert expected in out, out
    assert f"{LOCATION}.key-env" in out
    for value in env.values():
        if value and "/" not in value:
            assert value not in out, "the build printed (part of) the key"


def test_custom_key_env(tmp_path: Path, key: bytes) -> None:
    project = write_product(tmp_path, {"m": "models/m.xml"}, extra_hook_options='key-env = "ACME_MODEL_KEY"')
    make_ir(project / "models/m.xml")
    out = output_of_failed_build(project, {"OVCRYPT_KEY": key.hex()})
    assert "names ACME_MODEL_KEY, which is not set" in out
    build_wheel(project, {"ACME_MODEL_KEY": key.hex()})


def test_plaintext_inside_the_package_fails_with_the_fix(tmp_path: Path, key_env: dict[str, str]) -> None:
    project = write_product(tmp_path, {"m": "src/acme_vision/models/m.xml"})
    make_ir(project / "src/acme_vision/models/m.xml")
    out = output_of_failed_build(project, key_env)
    assert "file src/acme_vision/models/m.xml would be packed into the wheel as acme_vision/models/m.xml" in out
    assert 'exclude = ["/src/acme_vision/models"]' in out
    text = (project / "pyproject.toml").read_text()
    text = text.replace(
        'packages = ["src/acme_vision"]', 'packages = ["src/acme_vision"]\nexclude = ["/src/acme_vision/models"]'
    )
    (project / "pyproject.toml").write_text(
        text.replace('exclude = ["/models"]', 'exclude = ["/src/acme_vision/models"]')
    )
    build_wheel(project, key_env)


def test_sdist_never_ships_plaintext_by_default(tmp_path: Path, key_env: dict[str, str]) -> None:
    project = write_product(tmp_path, {"m": "models/m.xml"})
    make_ir(project / "models/m.xml")
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(
        text.replace('[tool.hatch.build.targets.sdist]\nexclude = ["/models"]\n', "")
    )
    out = output_of_failed_build(project, key_env)
    assert "2 files in models/ would be packed into the sdist" in out and out.count("would be packed") == 1
    assert 'add `exclude = ["/models"]` under [tool.hatch.build.targets.sdist]' in out
    assert "allow-plaintext-sdist = true" in out
    add_hook_option(project, "allow-plaintext-sdist = true")
    build_wheel(project, key_env)


def test_wheel_from_the_sdist_fails_clearly(tmp_path: Path, key_env: dict[str, str]) -> None:
    """`python -m build` builds the wheel from the sdist, which holds no models: it must say so and how to fix it."""
    project = write_product(tmp_path, {"m": "models/m.xml"})
    make_ir(project / "models/m.xml")
    run([sys.executable, "-m", "build", "--no-isolation", "--sdist", str(project)], env=key_env)
    (sdist,) = (project / "dist").glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        assert not [n for n in tar.getnames() if n.endswith((".xml", ".bin"))]
    result = run([sys.executable, "-m", "build", "--no-isolation", str(project)], env=key_env, check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "this is an sdist, and hatch-ovcrypt keeps model files out of sdists" in out
    assert "python -m build --wheel" in out and "uv build --wheel" in out


def test_ambiguous_package_must_be_named(tmp_path: Path, key_env: dict[str, str]) -> None:
    project = write_product(tmp_path, {"m": "models/m.xml"})
    make_ir(project / "models/m.xml")
    (project / "src/other").mkdir()
    (project / "src/other/__init__.py").write_text("")
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text.replace('"src/acme_vision"]', '"src/acme_vision", "src/other"]'))
    out = output_of_failed_build(project, key_env)
    assert f"`{LOCATION}.package` is needed: the wheel has several packages (acme_vision, other)" in out
    add_hook_option(project, 'package = "other"')
    build_wheel(project, key_env)
    (wheel,) = (project / "dist").glob("*.whl")
    import zipfile

    assert "other/_ovcrypt/manifest.json" in zipfile.ZipFile(wheel).namelist()


def test_hook_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, hatch_ovcrypt.hooks;"
        "heavy = [m for m in ('openvino', 'cryptography', 'numpy') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    run([sys.executable, "-c", code])


def test_check_command_reports_like_the_build(tmp_path: Path, key_env: dict[str, str]) -> None:
    project = write_product(tmp_path, {"m": "models/m.xml", "gone": "models/gone.xml"})
    make_ir(project / "models/m.xml")
    check = [sys.executable, "-m", "hatch_ovcrypt", "check", str(project)]
    result = run(check, env=key_env, check=False)
    assert result.returncode == 1
    assert f"`{LOCATION}.models.gone` names models/gone.xml and models/gone.bin, which do not exist" in result.stderr
    assert "Traceback" not in result.stderr
    make_ir(project / "models/gone.xml")
    ok = run(check, env=key_env)
    assert ok.stdout.startswith("ok: 2 model(s)")
    for line in ("  key-env                OVCRYPT_KEY (default)", "key: from $OVCRYPT_KEY, key id",
                 "  segment-size           1048576 (default)", "  package                acme_vision",
                 "  compiled-model-cache   false (default)"):  # fmt: skip
        assert line in ok.stdout, ok.stdout
    key_file = tmp_path / "k"
    key_file.write_text(key_env["OVCRYPT_KEY"])
    via_file = run(check, env={"OVCRYPT_KEY_FILE": str(key_file)})  # the key source actually used is named
    assert f"key: from $OVCRYPT_KEY_FILE ({key_file})" in via_file.stdout, via_file.stdout
    flags = run([*check, "--key-file", str(key_file), "--key-env", "ACME_KEY"], env={})
    assert f"key: from --key-file {key_file}" in flags.stdout and "  key-env                ACME_KEY\n" in flags.stdout
    assert "hatch-ovcrypt: error: hatch-ovcrypt:" not in result.stderr  # no doubled prefix


def test_global_table_stops_a_plaintext_sdist_before_it_is_written(tmp_path: Path, key_env: dict[str, str]) -> None:
    project = write_product(tmp_path, {"m": "models/m.xml"})
    make_ir(project / "models/m.xml")
    text = (project / "pyproject.toml").read_text()
    text = text.replace('[tool.hatch.build.targets.sdist]\nexclude = ["/models"]\n', "")
    (project / "pyproject.toml").write_text(
        text.replace("[tool.hatch.build.targets.wheel.hooks.ovcrypt]", "[tool.hatch.build.hooks.ovcrypt]")
    )
    result = run([sys.executable, "-m", "build", "--no-isolation", "--sdist", str(project)], env=key_env, check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "`tool.hatch.build.hooks.ovcrypt.models.m` 2 files in models/ would be packed into the sdist" in out
    assert not list((project / "dist").glob("*.tar.gz")), "a plaintext sdist was written"


# --- option typos and model names (issue 18) ----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "at", "meant"),
    [
        ({"modles": {"m": "m.xml"}}, "modles", "models"),
        ({"key_env": "K"}, "key_env", "key-env"),
        ({"keyenv": "K"}, "keyenv", "key-env"),
        ({"segment_size": 4096}, "segment_size", "segment-size"),
        ({"enable_by_default": False}, "enable_by_default", "enable-by-default"),  # hatchling's own option
        ({"models": {"m": {"folder": "models", "kidn": "llm"}}}, "models.m.kidn", "kind"),
        ({"models": {"m": {"source": "m.onnx", "compress_to_fp16": False}}}, "models.m.compress_to_fp16",
         "compress-to-fp16"),
    ],
)  # fmt: skip
def test_an_option_typo_names_the_option_meant(raw: dict[str, object], at: str, meant: str) -> None:
    from hatch_ovcrypt.config import parse_options

    _, problems = parse_options({"models": {"m": "m.xml"}, **raw}, Path("/p"), LOCATION)
    (problem,) = [p for p in problems if p.path == f"{LOCATION}.{at}"]
    assert f"did you mean `{meant}`?" in problem.message, problem


@pytest.mark.parametrize("option", ["allow-plaintext-sdist", "compiled-model-cache"])
@pytest.mark.parametrize("value", ["true", 1, [True]])
def test_a_boolean_option_takes_only_true_or_false(option: str, value: object) -> None:
    from hatch_ovcrypt.config import parse_options

    options, problems = parse_options({"models": {"m": "m.xml"}, option: value}, Path("/p"), LOCATION)
    assert [(p.path, p.message) for p in problems] == [
        (f"{LOCATION}.{option}", "for build hook `ovcrypt` must be true or false")
    ]
    assert options.allow_plaintext_sdist is False and options.compiled_model_cache is False
    options, problems = parse_options({"models": {"m": "m.xml"}, option: True}, Path("/p"), LOCATION)
    assert problems == [] and getattr(options, option.replace("-", "_")) is True


def test_a_model_table_without_its_source_names_the_one_meant() -> None:
    from hatch_ovcrypt.config import parse_options

    _, problems = parse_options({"models": {"m": {"xlm": "m.xml"}}}, Path("/p"), LOCATION)
    assert [str(p) for p in problems] == [
        f"`{LOCATION}.models.m` must be a path (an IR .xml, a model folder, or a file to convert), or a table with "
        "exactly one of `xml`, `folder` or `source` (`xlm`: did you mean `xml`?)"
    ]


def _refused_names() -> list[str]:
    """Every name the build must refuse, computed from what they clash with (never a hand list)."""
    import keyword

    import ovcrypt_runtime as runtime
    from hatch_ovcrypt.hook.stubs import stub_names

    public = {name for name in vars(runtime) if not name.startswith("_")}
    return sorted({*keyword.kwlist, *public, *runtime.__all__, *stub_names(), "_private", "_settings", "__path__"})


def test_names_the_runtime_module_binds_include_the_issues_examples() -> None:
    refused = _refused_names()
    for name in ("class", "None", "threading", "annotations", "compile_model", "WrongKeyError", "ov", "ModelName"):
        assert name in refused


@pytest.mark.parametrize("name", _refused_names())
def test_a_model_name_that_clashes_is_refused_with_its_toml_path(name: str) -> None:
    from hatch_ovcrypt.config import parse_options

    _, problems = parse_options({"models": {name: "m.xml", "fine": "m.xml"}}, Path("/p"), LOCATION)
    assert [p.path for p in problems] == [f"{LOCATION}.models.{name}"], problems
    assert "choose" in problems[0].message


def test_keyword_and_runtime_names_fail_the_build(tmp_path: Path, key_env: dict[str, str]) -> None:
    project = write_product(tmp_path, {"class": "models/m.xml", "threading": "models/m.xml", "ok": "models/m.xml"})
    make_ir(project / "models/m.xml")
    out = output_of_failed_build(project, key_env)
    assert f"`{LOCATION}.models.class` is a Python keyword" in out
    assert f"`{LOCATION}.models.threading` is a name the runtime module `_ovcrypt` already has" in out
    assert "2 problems to fix before building" in out and "Traceback" not in out


def test_the_stub_parses_for_every_name_the_build_accepts() -> None:
    """Every candidate name is either refused by the build, or its stub parses, binds it once, and leaves the
    runtime module's own names alone (so the attribute reaches the model)."""
    import ast
    import keyword

    import ovcrypt_runtime as runtime
    from hatch_ovcrypt.config import model_name_problem
    from hatch_ovcrypt.hook.stubs import render_stub
    from hatch_ovcrypt.hook.vendoring import RuntimeParts
    from ovcrypt_runtime._format.manifest import IR_KIND, FileEntry, Manifest, ModelEntry

    candidates = [*_refused_names(), *keyword.softkwlist, "type", "case", "detector", "Det2", "print", "list"]
    accepted = sorted({name for name in candidates if model_name_problem(name) is None})
    assert {"match", "case", "type", "detector", "print"} <= set(accepted)
    entry = FileEntry("x.ovc", 1, "00", "00")
    kinds = [IR_KIND, "llm", "vlm", "text2image", "files"]
    models = {
        name: ModelEntry(kinds[i % len(kinds)], {"a.xml": entry} if kinds[i % len(kinds)] != IR_KIND else {})
        for i, name in enumerate(accepted)
    }
    stub = render_stub(Manifest("test", "00" * 16, models), "# header\n", RuntimeParts())  # every part shipped
    bound = []
    for node in ast.parse(stub).body:  # a syntax error fails here
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            bound.append(node.target.id)
    typed = [name for name in accepted if models[name].kind != "files"]
    assert sorted(bound) == typed
    assert not set(typed) & set(vars(runtime))
