"""Issue 12 item 8: an unknown or absent device is the runtime's DeviceError, naming the devices there are, raised
before anything is decrypted; OpenVINO's compile failures keep OpenVINO's message."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovcrypt_runtime._errors import DeviceError, OvcryptError
from tests.helpers import make_ir, render_folder, runtime_for


@pytest.mark.parametrize("device", ["GPU", "NPU.1", "NOSUCHDEVICE"])
def test_absent_device_is_refused_before_decrypting(
    tmp_path: Path, key: bytes, device: str, segment_decryptions: list[int]
) -> None:
    folder = render_folder(tmp_path / "_ovcrypt", {"m": make_ir(tmp_path / "m.xml", 4096)}, key)
    runtime = runtime_for(folder)
    runtime.keyring.add(key)
    decrypted = segment_decryptions
    with pytest.raises(DeviceError) as info:
        runtime.compile_model("m", device)
    message = str(info.value)
    assert f"OpenVINO device {device!r} is not available" in message and "available devices: CPU" in message
    assert isinstance(info.value, OvcryptError) and isinstance(info.value, RuntimeError)
    assert decrypted == [], "a segment was decrypted for a device that does not exist"
    runtime.compile_model("m", "CPU")
    assert decrypted, "the spy saw no decryption at all, so it proved nothing"


def test_a_compile_failure_keeps_openvinos_message(tmp_path: Path, key: bytes) -> None:
    folder = render_folder(tmp_path / "_ovcrypt", {"m": make_ir(tmp_path / "m.xml", 4096)}, key)
    runtime = runtime_for(folder)
    runtime.keyring.add(key)
    with pytest.raises(DeviceError, match=r"could not compile model 'm' on CPU: .*NOT_A_PROPERTY") as info:
        runtime.compile_model("m", "CPU", {"NOT_A_PROPERTY": "1"})
    assert "\n" not in str(info.value) and "available devices: CPU" in str(info.value)
    assert runtime.compile_model("m", "AUTO") is not None  # virtual devices are OpenVINO's to resolve
