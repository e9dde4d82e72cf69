"""Windows and macOS (issue 21), simulated on this machine (tests/platforms.py): the table of what works where.

| runtime call | Linux | macOS | Windows |
|---|---|---|---|
| compile_model, read_model, read_file, tokenizer | ok | ok (pread) | ok (sequential reads) |
| pipelines whose configs openvino-genai reads only from files | ok (memory files) | refused, or the opt-in | same |
| the encrypted compiled-model cache | ok | ok | ok, in a folder inside %LOCALAPPDATA%/%USERPROFILE% |
| encrypt and the hook's writer | ok | ok | ok (no pread: seek and read) |
| build-time conversion from ONNX etc. | ok | refused with the reason | refused with the reason |

The cache's, the writer's, the reader's and the CLI's own suites run under the same simulation (test_cache.py,
test_source_changes.py, test_format.py, test_cli.py); these tests add what those do not cover.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from hatch_ovcrypt.hook.writer import render_table
from ovcrypt_runtime._errors import UnsupportedModelError
from ovcrypt_runtime._format import direct as _direct
from ovcrypt_runtime._loading import cache as _cache
from ovcrypt_runtime._loading.runtime import Runtime
from ovcrypt_runtime._pipelines import genai as _genai
from ovcrypt_runtime._pipelines import memfiles as _memfiles
from ovcrypt_runtime._pipelines.memfiles import CONFIG_FILES_ENV, CONFIG_SUFFIXES, ConfigFolder, MemoryFolder
from tests.helpers import REPO, make_ir, reference_output, sample_input

pytestmark = pytest.mark.usefixtures("simulated_platform")

FIXTURES = REPO / "tests" / "fixtures"
LLM, VLM = FIXTURES / "tiny_llm", FIXTURES / "tiny_vlm"
KEY = bytes(range(7, 39))
NO_MEMORY_FILES = {"darwin", "win32"}


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An IR, an LLM folder and a VLM folder, encrypted as the hook does (once, on Linux)."""
    root = tmp_path_factory.mktemp("platform-package")
    ir = make_ir(root / "src" / "detector.xml", 64 << 10)
    models = {"detector": str(ir), "assistant": str(LLM), "seer": str(VLM)}
    render_table({"models": models}, root, root / "_ovcrypt", package="acme_vision", key=KEY, environ={})
    return root


def runtime(package: Path) -> Runtime:
    rt = Runtime(package / "_ovcrypt", "acme_vision")
    rt.keyring.add(KEY)
    return rt


def test_models_load_everywhere(package: Path, simulated_platform: str) -> None:
    """compile_model, read_model, read_file and tokenizer: the same results on every platform."""
    import openvino_genai as genai

    rt = runtime(package)
    x = sample_input()
    out = np.asarray(rt.compile_model("detector")(x)[0])
    np.testing.assert_allclose(out, reference_output(package / "src" / "detector.xml", x), rtol=1e-5, atol=1e-5)
    main = ov.Core().read_model(LLM / "openvino_model.xml")
    assert rt.read_model("assistant").get_friendly_name() == main.get_friendly_name()
    assert rt.read_file("assistant", "config.json") == (LLM / "config.json").read_bytes()
    tok = _genai.tokenizer(rt, "assistant", "CPU", {})
    plain = genai.Tokenizer(str(LLM))
    assert np.array_equal(tok.encode("hello world").input_ids.data, plain.encode("hello world").input_ids.data)


def test_the_cache_warms_up_everywhere(package: Path, tmp_path: Path, simulated_platform: str) -> None:
    """On Windows (mode bits mean nothing) a cache folder inside the user's profile is used, warm start included."""
    cache = tmp_path / "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runtime(package).compile_model("detector", cache_dir=cache)
        [entry] = cache.glob("*.ovc")
        before = entry.stat().st_mtime_ns
        runtime(package).compile_model("detector", cache_dir=cache)
    assert entry.stat().st_mtime_ns == before


def test_a_cache_folder_outside_the_profile_is_not_used_where_modes_mean_nothing(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simulated_platform: str
) -> None:
    if simulated_platform != "win32":
        pytest.skip("owners and mode bits decide on POSIX (test_cache.py)")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "profile" / "AppData" / "Local"))
    monkeypatch.setenv("USERPROFILE", str(tmp_path / "profile"))
    with pytest.warns(RuntimeWarning, match=r"not using the compiled-model cache folder .*outside .*profile.*"
                                            r"use a folder under %LOCALAPPDATA%"):  # fmt: skip
        runtime(package).compile_model("detector", cache_dir=tmp_path / "shared")
    assert not (tmp_path / "shared").exists()
    monkeypatch.delenv("LOCALAPPDATA")
    monkeypatch.delenv("USERPROFILE")
    assert "neither %LOCALAPPDATA% nor %USERPROFILE%" in str(_cache.folder_problem(tmp_path / "profile"))


def test_a_cache_entry_that_is_a_link_is_ignored_everywhere(tmp_path: Path, simulated_platform: str) -> None:
    """O_NOFOLLOW where there is one; else (Windows) the entry is checked with lstat before it is opened."""
    target = tmp_path / "elsewhere.ovc"
    target.write_bytes(b"x" * 100)
    link = tmp_path / ("0" * 64 + ".ovc")
    link.symlink_to(target)
    with pytest.warns(RuntimeWarning, match="ignored compiled-model cache entry .*: it is a symbolic link"):
        assert _cache._open_entry(link, None) is None
    if not hasattr(os, "mkfifo"):
        return
    fifo = tmp_path / ("1" * 64 + ".ovc")
    os.mkfifo(fifo)  # Windows has none; without O_NONBLOCK, opening it would wait for a writer
    with pytest.warns(RuntimeWarning, match="it is not a regular file"):
        assert _cache._open_entry(fifo, None) is None


@pytest.mark.parametrize("size", [0, 1, 4095, 1 << 20])
def test_reads_at_offsets_without_preadv_or_pread(tmp_path: Path, size: int, simulated_platform: str) -> None:
    """read_at: preadv (Linux), pread (macOS here), seek and read (Windows) give the same bytes, at any offset."""
    data = os.urandom(size + 10)
    path = tmp_path / "f"
    path.write_bytes(data)
    with path.open("rb", buffering=0) as f:
        view = memoryview(bytearray(size))
        _direct.pread_exact(f.fileno(), view, 10, "f")
        assert bytes(view) == data[10:]
        tail = memoryview(bytearray(20))
        assert _direct.read_at(f.fileno(), tail, size) == 10 and bytes(tail[:10]) == data[size:]
    assert _direct.positional_reads() == (simulated_platform != "win32")


def test_a_big_file_round_trips_without_o_direct_fadvise_or_pread(tmp_path: Path, simulated_platform: str) -> None:
    """Over the O_DIRECT threshold: Linux may read around the page cache; elsewhere buffered reads (pread on macOS,
    in order on Windows), and the writer encrypts with what the platform has. The same bytes everywhere."""
    from hatch_ovcrypt.hook.writer import encrypt_file
    from ovcrypt_runtime._format.spec import Role
    from ovcrypt_runtime._format.writer import FileSource
    from ovcrypt_runtime._loading.loader import decrypt_file

    plain = tmp_path / "big.bin"
    data = os.urandom(_direct.MIN_BYTES + 12345)
    plain.write_bytes(data)
    encrypted = tmp_path / "big.bin.ovc"
    encrypt_file(KEY, FileSource(plain), encrypted, name="big", role=Role.BIN)
    assert hasattr(os, "O_DIRECT") == hasattr(os, "posix_fadvise") == (simulated_platform == "linux")
    with encrypted.open("rb") as f:
        out = decrypt_file(f, "big", lambda _kid, _label: KEY, name="big", role=Role.BIN)
    assert out.tobytes() == data


# --- configs that openvino-genai reads only from files: refused without memory files, unless opted in ---------


def _config_folders() -> set[str]:
    root = Path(os.environ.get("LOCALAPPDATA", "")) / "hatch-ovcrypt" if sys.platform == "win32" else None
    import tempfile

    where = root if root is not None else Path(tempfile.gettempdir())
    return {p.name for p in where.glob("ovcrypt-configs-*")} if where.is_dir() else set()


def test_vlm_without_memory_files_is_refused_naming_platform_reason_and_opt_in(
    package: Path, simulated_platform: str
) -> None:
    if simulated_platform not in NO_MEMORY_FILES:
        assert _genai.vlm_pipeline(runtime(package), "seer", "CPU", {}) is not None
        return
    wanted = (rf"^openvino-genai reads this model's configs only from files, but this system \({simulated_platform}\) "
              rf"has no /proc/self/fd, .*; by default nothing decrypted is written to disk: set {CONFIG_FILES_ENV}=1 .*"
              r"never its weights")  # fmt: skip
    with pytest.raises(UnsupportedModelError, match=wanted):
        _genai.vlm_pipeline(runtime(package), "seer", "CPU", {})


def test_vlm_with_the_opt_in_writes_only_configs_and_removes_them(
    package: Path, monkeypatch: pytest.MonkeyPatch, simulated_platform: str
) -> None:
    """With OVCRYPT_ALLOW_CONFIG_FILES=1 the pipeline is built and generates what the plain folder does; what went
    to disk were configs only, and they are gone once the pipeline exists."""
    import openvino_genai as genai

    monkeypatch.setenv(CONFIG_FILES_ENV, "1")
    written: list[str] = []
    add = ConfigFolder.add

    def spy(self: ConfigFolder, relpath: str, data: bytes) -> Path:
        written.append(relpath)
        return add(self, relpath, data)

    monkeypatch.setattr(ConfigFolder, "add", spy)
    before = _config_folders()
    pipe = _genai.vlm_pipeline(runtime(package), "seer", "CPU", {})
    image = ov.Tensor(np.fromfunction(lambda y, x, c: (x * 8 + y * 4 + c * 60) % 256, (32, 32, 3)).astype(np.uint8))
    plain = genai.VLMPipeline(str(VLM), "CPU")
    prompt = "What is in the picture?"
    assert pipe.generate(prompt, images=[image], max_new_tokens=8).texts == plain.generate(
        prompt, images=[image], max_new_tokens=8
    ).texts
    assert _config_folders() == before, "the config folder is removed as soon as the pipeline is built"
    if simulated_platform in NO_MEMORY_FILES:
        assert written and all(p.endswith(CONFIG_SUFFIXES) for p in written), written
    else:
        assert written == [], "where memory files exist, the opt-in changes nothing"


@pytest.mark.parametrize("name", ["openvino_model.xml", "openvino_model.bin", "adapter_model.safetensors",
                                  "spm.model", "sub/weights.npy"])  # fmt: skip
def test_the_opt_in_never_writes_an_ir_or_weights(name: str, monkeypatch: pytest.MonkeyPatch,
                                                  simulated_platform: str) -> None:  # fmt: skip
    monkeypatch.setenv(CONFIG_FILES_ENV, "1")
    with ConfigFolder() as folder, pytest.raises(UnsupportedModelError, match="never an IR or weights"):
        folder.add(name, b"\0" * 64)
    assert not folder.path.exists()
    if simulated_platform in NO_MEMORY_FILES:  # checked before anything is written
        before = _config_folders()
        with pytest.raises(UnsupportedModelError, match="not a config"), _memfiles.memory_folder(
            {"config.json": b"{}", name: b"\0" * 64}
        ):
            pass
        assert _config_folders() == before


def test_config_folder_is_private_and_removed(monkeypatch: pytest.MonkeyPatch, simulated_platform: str) -> None:
    with ConfigFolder() as folder:
        path = folder.add("sub/config.json", b'{"a": 1}')
        assert path.read_bytes() == b'{"a": 1}'
        if simulated_platform == "win32":
            assert Path(os.environ["LOCALAPPDATA"]) in folder.path.parents
        else:
            assert folder.path.stat().st_mode & 0o777 == 0o700 and path.stat().st_mode & 0o777 == 0o600
    assert not folder.path.exists()


def test_whole_models_are_never_written_to_disk_opt_in_or_not(
    monkeypatch: pytest.MonkeyPatch, simulated_platform: str
) -> None:
    """MemoryFolder (path-only pipelines, conversion) holds weights: refused without memory files, even opted in."""
    if simulated_platform not in NO_MEMORY_FILES:
        pytest.skip("this platform has memory files")
    monkeypatch.setenv(CONFIG_FILES_ENV, "1")
    _memfiles.allow_config_files()
    try:
        with pytest.raises(UnsupportedModelError, match=rf"\({simulated_platform}\) has no /proc/self/fd") as info:
            MemoryFolder("openvino-genai builds WhisperPipeline only from a folder path")
        assert CONFIG_FILES_ENV not in str(info.value)
    finally:
        _memfiles.allow_config_files(False)


def test_conversion_is_refused_with_the_reason_without_memory_files(simulated_platform: str) -> None:
    import openvino.opset13 as ops

    from hatch_ovcrypt.sources.convert import ConversionError, serialize_in_memory

    x = ops.parameter([1, 4], np.float32, name="x")
    model = ov.Model([ops.relu(x)], [x], "m")
    if simulated_platform not in NO_MEMORY_FILES:
        assert serialize_in_memory(model).xml
        return
    wanted = rf"no memory-backed file .*\({simulated_platform}\) has no /proc/self/fd.*convert it yourself and name the"
    with pytest.raises(ConversionError, match=wanted):
        serialize_in_memory(model)


# --- importing without POSIX-only modules (Windows has no fcntl, pty, termios, resource, pwd, grp) ----------

BLOCKED = ("fcntl", "pty", "termios", "resource", "grp")
IMPORTS = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name in {blocked!r}:
            raise ImportError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Block())
for name in {blocked!r}:
    sys.modules.pop(name, None)
import hatch_ovcrypt.cli, hatch_ovcrypt.sources.convert, hatch_ovcrypt.hook.plugin, hatch_ovcrypt.hook.writer
from ovcrypt_runtime._loading import cache
from ovcrypt_runtime._format import reader, writer
from ovcrypt_runtime._pipelines import genai, memfiles
print(memfiles._memfd_usable())
"""


def test_everything_imports_without_posix_only_modules(simulated_platform: str) -> None:
    if simulated_platform != "linux":
        pytest.skip("a fresh interpreter: the simulation does not reach it")
    code = IMPORTS.format(blocked=set(BLOCKED))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"



def test_allow_config_files_from_the_products_code(simulated_platform: str) -> None:
    """The function of the product's API is the same opt-in as the environment variable, and can be taken back."""
    import ovcrypt_runtime as product_api

    files = {"config.json": b'{"hidden_size": 8}', "sub/preprocessor_config.json": b"{}"}
    product_api.allow_config_files()
    try:
        with _memfiles.memory_folder(files) as folder:
            assert {p: (folder / p).read_bytes() for p in files} == files
            on_disk = not (folder / "config.json").is_symlink()
            assert on_disk == (simulated_platform in NO_MEMORY_FILES)
        assert not folder.exists()
    finally:
        product_api.allow_config_files(False)
    if simulated_platform in NO_MEMORY_FILES:
        with pytest.raises(UnsupportedModelError, match=CONFIG_FILES_ENV), _memfiles.memory_folder(files):
            pass
