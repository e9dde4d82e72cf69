"""The memory properties of loading: one copy of the weights, in the runtime's buffer, and no plaintext on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from ovcrypt_runtime._format.spec import Role
from ovcrypt_runtime._loading.loader import WEIGHTS_ATTR
from tests.helpers import (
    REPO,
    encrypted_path,
    find_leaks,
    make_ir,
    plaintext_windows,
    render_folder,
    runtime_for,
    sample_input,
)
from tests.platforms import NEEDS_PROC

WEIGHTS = 8 << 20


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_ir(tmp_path / "src" / "detector.xml", WEIGHTS)


@pytest.fixture
def folder(tmp_path: Path, model: Path, key: bytes, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OVCRYPT_KEY", key.hex())
    return render_folder(tmp_path / "_ovcrypt", {"detector": model}, key)


def test_model_constants_live_in_the_runtime_buffer(folder: Path, model: Path) -> None:
    m = runtime_for(folder).read_model("detector")
    weights = getattr(m, WEIGHTS_ATTR)
    import openvino as ov

    # One buffer, owned by the OpenVINO tensor that read_model got, so OpenVINO keeps it alive itself.
    assert isinstance(weights, np.ndarray) and isinstance(weights.base, ov.Tensor) and weights.flags.writeable
    assert weights.tobytes() == model.with_suffix(".bin").read_bytes()
    lo, hi = weights.ctypes.data, weights.ctypes.data + weights.nbytes
    constants = [op for op in m.get_ops() if op.get_type_name() == "Constant"]
    assert constants
    for const in constants:
        data = const.data
        assert lo <= data.ctypes.data and data.ctypes.data + data.nbytes <= hi, "a constant was copied out"


def test_big_model_constants_live_in_the_runtime_buffer_too(
    tmp_path: Path, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the O_DIRECT size the buffer is a slice of its tensor and OpenVINO gets a region of that
    tensor: the constants must still be views of the one decrypted buffer, not copies."""
    from ovcrypt_runtime._format.direct import MIN_BYTES

    monkeypatch.setenv("OVCRYPT_KEY", key.hex())
    big = make_ir(tmp_path / "src" / "big.xml", 2 * MIN_BYTES, width=256)
    m = runtime_for(render_folder(tmp_path / "_ovcrypt", {"big": big}, key)).read_model("big")
    weights = getattr(m, WEIGHTS_ATTR)
    assert weights.nbytes >= MIN_BYTES and weights.tobytes() == big.with_suffix(".bin").read_bytes()
    lo, hi = weights.ctypes.data, weights.ctypes.data + weights.nbytes
    constants = [op.data for op in m.get_ops() if op.get_type_name() == "Constant"]
    assert constants
    assert all(lo <= c.ctypes.data and c.ctypes.data + c.nbytes <= hi for c in constants), "a constant was copied"


def test_read_model_outlives_its_python_objects(folder: Path, model: Path) -> None:
    """`core.compile_model(read_model(name))`: the temporary Model and our references die at once, yet
    the compiled model must still read valid weights (it crashed when OpenVINO did not own the buffer)."""
    import gc

    import openvino as ov

    from tests.helpers import reference_output

    compiled = ov.Core().compile_model(runtime_for(folder).read_model("detector"), "CPU")
    gc.collect()
    clobber = [np.full(WEIGHTS, 7, np.uint8) for _ in range(8)]  # reuse any memory that was freed
    assert np.array_equal(compiled(sample_input())[0], reference_output(model, sample_input()))
    del clobber


def test_buffers_sliced_for_o_direct_are_owned_by_openvino_too() -> None:
    """A buffer of O_DIRECT size is a slice of the array over its tensor (numpy's `.base` is that array, not
    the tensor); OpenVINO must still own it. It did not: an LLMPipeline built from a 570 MiB folder read
    the freed weights and crashed, since nothing pins the weights on an openvino_genai pipeline."""
    code = """
import gc, numpy as np
from ovcrypt_runtime._format.direct import ALIGNMENT, MIN_BYTES
from ovcrypt_runtime._loading.loader import owned_buffer, owning_tensor
buf = owned_buffer(2 * MIN_BYTES, file_offset=123)
assert buf.ctypes.data % ALIGNMENT == 123, "not a slice placed for O_DIRECT"
buf[:] = 5
tensor = owning_tensor(buf)
assert tensor.data.ctypes.data == buf.ctypes.data and tensor.get_byte_size() == buf.nbytes
# What OpenVINO's C++ objects keep: a C++ copy of the tensor, without its Python object.
import openvino as ov
tensor = ov.Tensor(tensor, ov.Coordinate([0]), ov.Coordinate([tensor.get_byte_size()]))
del buf
gc.collect()
clobber = [np.full(2 * MIN_BYTES, 7, np.uint8) for _ in range(4)]  # reuse any memory that was freed
assert int(tensor.data.min()) == int(tensor.data.max()) == 5
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


def test_compiled_model_pins_the_same_buffer(folder: Path) -> None:
    rt = runtime_for(folder)
    compiled = rt.compile_model("detector")
    weights = getattr(compiled, WEIGHTS_ATTR)
    assert weights.nbytes == encrypted_plaintext_length(folder, Role.BIN)


def encrypted_plaintext_length(folder: Path, role: Role) -> int:
    from ovcrypt_runtime._format.spec import parse_header

    header, _, _ = parse_header(encrypted_path(folder, "detector", role).read_bytes()[:512], "x")
    return header.plaintext_length


def test_decryption_allocates_one_buffer(folder: Path) -> None:
    """The ciphertext is read straight into the final buffer: no bytes object, no second array."""
    rt = runtime_for(folder)
    rt.files.decrypt("detector", "detector.xml")  # key lookup, manifest check and imports out of the way
    tracemalloc.start()
    try:
        weights = rt.files.decrypt("detector", "detector.bin")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert weights.nbytes >= WEIGHTS * 0.9
    assert peak < weights.nbytes + (1 << 20), f"peak {peak} for {weights.nbytes} bytes of weights"


def test_warm_start_imports_from_the_decrypted_buffer(folder: Path, tmp_path: Path) -> None:
    """A cache entry is decrypted into one buffer that OpenVINO keeps using (shared, not copied)."""
    cache = tmp_path / "cache"
    runtime_for(folder).compile_model("detector", cache_dir=cache)
    rt = runtime_for(folder)
    tracemalloc.start()
    try:
        compiled = rt.compile_model("detector", cache_dir=cache)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    blob = getattr(compiled, WEIGHTS_ATTR)
    assert blob.nbytes >= WEIGHTS
    assert peak < blob.nbytes + (2 << 20), f"peak {peak} for a {blob.nbytes}-byte compiled blob"
    x = sample_input()
    before = np.asarray(compiled(x)[0]).copy()
    blob.fill(0)  # were the weights copied out, the output would not change
    assert not np.allclose(np.asarray(compiled.create_infer_request().infer([x])[0]), before)


CHILD = """
import json, sys
from pathlib import Path
from tests.helpers import runtime_for, sample_input
root = Path(sys.argv[2])
rt = runtime_for(Path(sys.argv[1]))
compiled = rt.compile_model("detector", cache_dir=sys.argv[3])
compiled(sample_input())
maps = sorted({line.split(maxsplit=5)[5].strip() for line in open("/proc/self/maps") if len(line.split()) > 5})
print(json.dumps([m for m in maps if m.startswith(str(root))]))
"""


@NEEDS_PROC
def test_loading_never_writes_plaintext(folder: Path, model: Path, tmp_path: Path, key: bytes) -> None:
    """Cold and warm loads in fresh processes: nothing written holds plaintext, no file is mapped but .ovc."""
    scratch = tmp_path / "scratch"
    (scratch / "tmp").mkdir(parents=True)
    cache = scratch / "cache"
    env = {**os.environ, "OVCRYPT_KEY": key.hex(), "PYTHONPATH": str(REPO), "HOME": str(scratch),
           "TMPDIR": str(scratch / "tmp"), "XDG_CACHE_HOME": str(scratch / "xdg")}  # fmt: skip
    for _ in ("cold", "warm"):
        proc = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(tmp_path), str(cache)], env=env,
                              cwd=scratch, capture_output=True, text=True, check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        mapped = json.loads(proc.stdout.strip().splitlines()[-1])
        assert all(path.endswith(".ovc") for path in mapped), f"files mapped from the test folder: {mapped}"
    written = [p for p in scratch.rglob("*") if p.is_file()]  # the cache entry (and OpenVINO's telemetry ids)
    assert [p.suffix for p in cache.iterdir()] == [".ovc"]
    windows = plaintext_windows([model, model.with_suffix(".bin")], step=2048)
    blobs = [(str(p), p.read_bytes()) for p in [*written, *folder.rglob("*.ovc")]]
    assert not find_leaks(windows, blobs)


def test_unknown_device_is_openvino_error_and_leaves_no_thread(folder: Path) -> None:
    """The device plugin is loaded on a helper thread while the weights are decrypted; an unknown
    device still fails with OpenVINO's own message from compile_model, and the helper is gone."""
    unraised: list[threading.ExceptHookArgs] = []
    previous, threading.excepthook = threading.excepthook, unraised.append
    try:
        with pytest.raises(RuntimeError, match="NO_SUCH_DEVICE"):
            runtime_for(folder).compile_model("detector", "NO_SUCH_DEVICE")
    finally:
        threading.excepthook = previous
    assert not unraised
    assert not [t for t in threading.enumerate() if t.name == "ovcrypt-plugin"]
