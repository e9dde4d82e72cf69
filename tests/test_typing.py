"""Typed model names and attribute access (issue 12, "Beyond"): the generated `_ovcrypt` carries `py.typed` and an
`__init__.pyi` with Literal model, part and file names, so mypy flags a misspelt model name; `from <pkg>._ovcrypt
import detector` compiles once on first access, and importing `_ovcrypt` decrypts nothing."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hatch_ovcrypt.hook.writer import render_table
from tests.helpers import REPO, make_ir, reference_output, sample_input

LLM = REPO / "tests" / "fixtures" / "tiny_llm"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, Path]:
    """An installed-looking product `acme_vision` with a single IR `detector` and an LLM folder `assistant`."""
    root = tmp_path_factory.mktemp("typed")
    key = bytes(range(32))
    xml = make_ir(root / "src" / "detector.xml", 8 << 10)
    package = root / "site" / "acme_vision"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "py.typed").write_text("")
    raw = {"models": {"detector": str(xml), "assistant": str(LLM)}}
    render_table(raw, root, package / "_ovcrypt", package="acme_vision", key=key, environ={})
    return root / "site", key, xml


def test_stub_states_the_runtime_api(site: tuple[Path, bytes, Path]) -> None:
    stub = (site[0] / "acme_vision" / "_ovcrypt" / "__init__.pyi").read_text()
    runtime = ast.parse((REPO / "runtime" / "ovcrypt_runtime" / "__init__.py").read_text())
    public = {n.name for n in runtime.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
    stubbed = {n.name for n in ast.parse(stub).body if isinstance(n, ast.FunctionDef)}
    assert public - {"load_openssl_model"} == stubbed  # no OpenSSL-recipe model: that loader is not shipped
    assert "ModelName = Literal['assistant', 'detector']" in stub and "'openvino_tokenizer'" in stub
    assert "detector: ov.CompiledModel" in stub and "assistant: openvino_genai.LLMPipeline" in stub
    assert (site[0] / "acme_vision" / "_ovcrypt" / "py.typed").is_file()


def test_mypy_flags_a_misspelt_model_name(site: tuple[Path, bytes, Path], tmp_path: Path) -> None:
    use = tmp_path / "use.py"
    use.write_text(
        "from acme_vision._ovcrypt import assistant, compile_model, llm_pipeline, read_file\n"
        'compile_model("detector")\n'
        'compile_model("detectr")\n'
        'llm_pipeline("detector")\n'
        'read_file("assistant", "config.json")\n'
        "pipe = assistant\n"
        'compile_model("detector", cache_dir="cache")\n'  # a product built without compiled-model-cache = true
        'compile_model("detector", cache_dir=None)\n'
    )
    flags = ["--strict", "--no-incremental", "--follow-imports=silent", "--ignore-missing-imports"]
    cmd = [sys.executable, "-m", "mypy", *flags, str(use)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False,
                            env={"MYPYPATH": str(site[0]), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)  # fmt: skip
    out = result.stdout
    assert 'use.py:3: error: Argument 1 to "compile_model" has incompatible type "Literal[\'detectr\']"' in out, out
    assert "use.py:4: error: Argument 1 to \"llm_pipeline\"" in out, out
    assert "use.py:2:" not in out and "use.py:5: error" not in out, out
    assert "use.py:6" not in out, out  # (openvino ships no type information: the attribute types are Any to mypy)
    assert 'use.py:7: error: Argument "cache_dir" to "compile_model" has incompatible type "str"' in out, out
    assert "use.py:8" not in out, out


def test_attribute_access_compiles_once_and_import_decrypts_nothing(site: tuple[Path, bytes, Path]) -> None:
    path, key, xml = site
    code = (
        "import sys\n"
        "import acme_vision._ovcrypt as runtime\n"
        "assert 'cryptography' not in sys.modules and 'openvino' not in sys.modules\n"
        "from acme_vision._ovcrypt import detector\n"
        "from acme_vision._ovcrypt import detector as again\n"
        "assert detector is again is runtime.compile_model('detector')\n"
        "import numpy as np\n"
        "np.save(sys.argv[1], detector(np.load(sys.argv[2]))[0])\n"
        "try:\n    runtime.nonexistent\nexcept AttributeError as e:\n    print('ok', e)\n"
    )
    work = path.parent
    np.save(work / "in.npy", sample_input())
    result = subprocess.run(
        [sys.executable, "-c", code, str(work / "out.npy"), str(work / "in.npy")],
        capture_output=True, text=True, check=False,
        env={"PYTHONPATH": str(path), "OVCRYPT_KEY": key.hex(), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ok module 'acme_vision._ovcrypt' has no attribute 'nonexistent'" in result.stdout
    assert np.array_equal(np.load(work / "out.npy"), reference_output(xml, sample_input()))
    shutil.rmtree(work / "out.npy", ignore_errors=True)
