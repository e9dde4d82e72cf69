"""Issue 17 item 9 and issue 18 item 5: what every builder refuses before anything is decrypted.

OpenVINO's cache writes the decrypted weights in plaintext, and GenAI pipelines passed `CACHE_DIR` straight
through; a device spelled as OpenVINO does not spell it ("cpu") was decrypted before OpenVINO refused it.
Each builder (compile_model and every GenAI builder, through the one gate `_genai.builder`) must refuse both
with the runtime's own one-line error while a spy on segment decryption still reads zero.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import openvino.properties as props
import pytest

import ovcrypt_runtime as api
from ovcrypt_runtime._errors import DeviceError, UnsafeConfigError
from ovcrypt_runtime._loading.runtime import Runtime
from ovcrypt_runtime._pipelines import genai as _genai
from tests.helpers import REPO, make_ir, render_folder, runtime_for, sample_input

FIXTURES = REPO / "tests" / "fixtures"
KEY = bytes(range(32))
# Each builder with the model (of the package below) it builds.
BUILT = {"tokenizer": "chat", "llm_pipeline": "chat", "vlm_pipeline": "vision", "text2image_pipeline": "painter"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("gate")
    models = {"chat": FIXTURES / "tiny_llm", "vision": FIXTURES / "tiny_vlm", "painter": FIXTURES / "tiny_sd",
              "m": make_ir(tmp / "m.xml", 64 << 10)}  # fmt: skip
    return render_folder(tmp / "_ovcrypt", models, KEY)


@pytest.fixture
def rt(folder: Path) -> Runtime:
    runtime = runtime_for(folder)
    runtime.keyring.add(KEY)
    return runtime


def test_every_builder_goes_through_the_gate() -> None:
    """Today's builders, and any added later: each function of _genai that builds from (rt, name, device,
    properties) is the gate's, and each public builder that takes properties calls one of those."""
    assert set(_genai.BUILDERS) == set(BUILT)
    for name, fn in vars(_genai).items():
        if inspect.isfunction(fn) and fn.__module__ == _genai.__name__ and not name.startswith("_"):
            params = list(inspect.signature(fn).parameters)
            if params[:1] == ["rt"] and "properties" in params:
                assert _genai.BUILDERS.get(name) is fn, f"_genai.{name} builds without the gate (@builder)"
    for name in api.__all__:
        fn = getattr(api, name)
        if inspect.isfunction(fn) and "properties" in inspect.signature(fn).parameters and name != "compile_model":
            assert f"from ._pipelines.genai import {name} as build" in inspect.getsource(fn), name
            assert name in _genai.BUILDERS, name


UNSAFE: list[dict[str, Any]] = [
    {"CACHE_DIR": "cache"},
    {"cache_dir": "cache"},
    {props.cache_dir: "cache"},  # openvino's own property object as the key
    {"CACHE_ENCRYPTION_CALLBACKS": [bytes, bytes]},
    {"DEVICE_PROPERTIES": {"CPU": {"CACHE_DIR": "cache"}}},  # device-scoped: OpenVINO caches all the same
    dict([props.device.properties({"CPU": {props.cache_dir: "cache"}})]),  # the same, as openvino spells it
]


@pytest.mark.parametrize("builder", sorted(BUILT))
@pytest.mark.parametrize("unsafe", range(len(UNSAFE)))
def test_builders_refuse_plaintext_cache_before_decrypting(
    rt: Runtime, builder: str, unsafe: int, segment_decryptions: list[int], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsafeConfigError, match=r"(?i)property .*CACHE_.* is refused: OpenVINO's cache stores") as info:
        _genai.BUILDERS[builder](rt, BUILT[builder], "CPU", UNSAFE[unsafe])
    assert "\n" not in str(info.value)
    assert segment_decryptions == [], f"{builder} decrypted before refusing {UNSAFE[unsafe]}"
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("unsafe", range(len(UNSAFE)))
def test_compile_model_refuses_plaintext_cache_at_any_depth(
    rt: Runtime, unsafe: int, segment_decryptions: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsafeConfigError, match=r"(?i)compile option .*CACHE_.* is refused"):
        rt.compile_model("m", "CPU", UNSAFE[unsafe])
    assert segment_decryptions == [] and not (tmp_path / "cache").exists()


def test_a_builder_still_builds_with_safe_properties(rt: Runtime, segment_decryptions: list[int]) -> None:
    pipe = _genai.llm_pipeline(rt, "chat", "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    assert pipe.generate("hello", max_new_tokens=2) is not None and segment_decryptions


# --- devices, as OpenVINO names them ------------------------------------------------------------

REFUSED = ["cpu", "Cpu", "cpu.0", "CPU.0", "CPU:0", "auto", "auto:CPU", "AUTO:cpu", "HETERO:cpu", "MULTI:cpu",
           "AUTO:GPU", "MULTI:CPU,GPU", "HETERO:GPU,CPU", "AUTO:-CPU", "BATCH:CPU,CPU", "MULTI:AUTO", "GPU", "",
           " CPU"]  # fmt: skip
ACCEPTED = ["CPU", "AUTO", "AUTO:CPU", "AUTO:-GPU", "HETERO:CPU", "MULTI:CPU", "MULTI:CPU(2)", "BATCH:CPU(4)"]


def _plain_openvino_refuses(device: str) -> bool:
    p = ov.opset13.parameter([1, 4], np.float32)
    try:
        ov.Core().compile_model(ov.Model([ov.opset13.relu(p)], [p]), device)
    except RuntimeError:
        return True
    return False


@pytest.mark.parametrize("device", REFUSED)
def test_compile_model_refuses_devices_openvino_refuses_before_decrypting(
    rt: Runtime, device: str, segment_decryptions: list[int]
) -> None:
    assert _plain_openvino_refuses(device), f"OpenVINO accepts {device!r} here: the test's premise is wrong"
    with pytest.raises(DeviceError, match=r"available devices: CPU\)") as info:
        rt.compile_model("m", device)
    assert "\n" not in str(info.value) and f"OpenVINO device {device!r} is not available" in str(info.value)
    assert segment_decryptions == [], f"{device!r} was decrypted for before it was refused"


@pytest.mark.parametrize("device", ACCEPTED)
def test_compile_model_accepts_what_openvino_accepts(rt: Runtime, device: str) -> None:
    assert not _plain_openvino_refuses(device)
    compiled = rt.compile_model("m", device)
    assert compiled(sample_input())[0].shape == (1, 64)


@pytest.mark.parametrize("builder", sorted(set(BUILT) - {"tokenizer"}))  # openvino-genai puts tokenizers on CPU
@pytest.mark.parametrize("device", ["cpu", "AUTO:cpu", "CPU.0", "HETERO:GPU"])
def test_builders_refuse_devices_before_decrypting(
    rt: Runtime, builder: str, device: str, segment_decryptions: list[int]
) -> None:
    with pytest.raises(DeviceError, match=r"available devices: CPU\)") as info:
        _genai.BUILDERS[builder](rt, BUILT[builder], device, {})
    assert "\n" not in str(info.value)
    assert segment_decryptions == []


@pytest.mark.parametrize("device", ["AUTO:CPU", "HETERO:CPU", "MULTI:CPU"])
def test_llm_pipeline_accepts_virtual_devices(rt: Runtime, device: str) -> None:
    assert _genai.llm_pipeline(rt, "chat", device, {}).generate("hello", max_new_tokens=2) is not None
