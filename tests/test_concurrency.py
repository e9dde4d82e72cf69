"""Issue 5, load and concurrency: one compile for many threads, parallel models, no leaks over many cycles,
and processes sharing a dist/ folder or a cache folder without corrupting each other."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import weakref
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ovcrypt_runtime._loading.runtime import Runtime
from tests.helpers import (
    REPO,
    make_ir,
    reference_output,
    render_folder,
    runtime_for,
    sample_input,
    unpack,
    write_product,
)

Counter = Callable[[str, int], None]


@pytest.fixture
def package(tmp_path: Path, key: bytes, monkeypatch: pytest.MonkeyPatch) -> Path:
    models = {
        "alpha": make_ir(tmp_path / "src" / "alpha.xml", 1 << 20, seed=31, width=256),
        "beta": make_ir(tmp_path / "src" / "beta.xml", 1 << 20, seed=32, width=256),
    }
    monkeypatch.setenv("OVCRYPT_KEY", key.hex())
    return render_folder(tmp_path / "_ovcrypt", models, key)


def count_compiles(runtime: Runtime, monkeypatch: pytest.MonkeyPatch,
                   during: Callable[[str], None] | None = None) -> list[str]:  # fmt: skip
    """Record each real compile the runtime does (its `_compile`), optionally running `during` inside it."""
    calls: list[str] = []
    real = runtime._compile

    def counting(name: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        if during is not None:
            during(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(runtime, "_compile", counting)
    return calls


def run_threads(target: Callable[[int], None], count: int) -> None:
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads), "threads hung"
    if errors:
        raise errors[0]


def test_sixteen_threads_one_compile_same_object(package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = runtime_for(package)
    calls = count_compiles(runtime, monkeypatch)
    barrier = threading.Barrier(16)
    results: list[object] = [None] * 16

    def ask(i: int) -> None:
        barrier.wait()
        results[i] = runtime.compile_model("alpha")

    run_threads(ask, 16)
    assert calls == ["alpha"]
    assert all(r is results[0] for r in results)
    assert np.asarray(results[0](sample_input(256))[0]).shape == (1, 256)  # type: ignore[operator]


def test_different_models_compile_in_parallel(package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each model's compile waits, inside the runtime, until the other one has started: only parallel compiles pass."""
    runtime = runtime_for(package)
    started = {"alpha": threading.Event(), "beta": threading.Event()}

    def rendezvous(name: str) -> None:
        started[name].set()
        other = "beta" if name == "alpha" else "alpha"
        assert started[other].wait(30), f"{name} compiled alone: {other} could not start meanwhile"

    calls = count_compiles(runtime, monkeypatch, rendezvous)
    compiled: dict[str, object] = {}

    def load(i: int) -> None:
        name = ("alpha", "beta")[i]
        compiled[name] = runtime.compile_model(name)

    run_threads(load, 2)
    assert sorted(calls) == ["alpha", "beta"] and compiled["alpha"] is not compiled["beta"]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc to measure memory")
def test_load_unload_cycles_return_memory(package: Path, suite_count: Counter) -> None:
    runtime = runtime_for(package)
    x = sample_input(256)
    weights: list[weakref.ref[Any]] = []

    def cycle() -> None:
        compiled = runtime.compile_model("alpha")
        compiled(x)
        weights.append(weakref.ref(compiled._ovcrypt_weights))
        runtime.unload("alpha")

    for _ in range(10):  # warm up allocators and OpenVINO's own caches
        cycle()
    gc.collect()
    baseline = rss_bytes()
    cycles = 200
    for _ in range(cycles):
        cycle()
    gc.collect()
    grown = rss_bytes() - baseline
    print(f"RSS grew by {grown / 2**20:.1f} MiB over {cycles} cycles")
    weight_size = (package / "models" / "alpha.bin.ovc").stat().st_size
    # a leak of the weights alone would be cycles * 1 MiB = 200 MiB
    assert grown < 24 * weight_size, f"memory grew by {grown >> 20} MiB over {cycles} cycles"
    alive = [ref for ref in weights if ref() is not None]
    assert not alive, f"{len(alive)} decrypted weight buffers outlived their unloaded models"
    suite_count("load/unload cycles", cycles + 10)


# --- several processes -------------------------------------------------------------------------


def _start(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OVCRYPT_")}
    return subprocess.Popen(cmd, env={**clean, **env}, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def _finish(procs: list[subprocess.Popen[str]]) -> list[str]:
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{proc.args!r} failed ({proc.returncode}):\n{out}\n{err}"
        outputs.append(out)
    return outputs


@pytest.mark.slow
def test_processes_building_into_one_dist(tmp_path: Path, key: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same project built twice and another project, at once, into one dist/: whole, loadable wheels only."""
    dist = tmp_path / "dist"
    projects = {}
    for package, seed in (("acme_vision", 41), ("acme_audio", 42)):
        project = tmp_path / package
        make_ir(project / "models" / "m.xml", 1 << 20, seed=seed, width=256)
        projects[package] = write_product(project, {"m": "models/m.xml"}, package=package)
    cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)]
    order = ["acme_vision", "acme_audio", "acme_vision"]
    _finish([_start([*cmd, str(projects[p])], {"OVCRYPT_KEY": key.hex()}) for p in order])
    wheels = sorted(dist.iterdir())
    assert [w.name for w in wheels] == ["acme_audio-1.0.0-py2.py3-none-any.whl",
                                        "acme_vision-1.0.0-py2.py3-none-any.whl"], wheels  # fmt: skip
    monkeypatch.setenv("OVCRYPT_KEY", key.hex())
    for wheel, package in zip(wheels, ("acme_audio", "acme_vision"), strict=True):
        with zipfile.ZipFile(wheel) as zf:
            assert zf.testzip() is None
        site = unpack(wheel, tmp_path / f"site-{package}")
        runtime = runtime_for(site / package / "_ovcrypt", package)
        expected = reference_output(projects[package] / "models" / "m.xml", sample_input(256))
        got = runtime.compile_model("m")(sample_input(256))[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


CACHE_WORKER = """
import sys, numpy as np
from pathlib import Path
from ovcrypt_runtime._loading.runtime import Runtime
folder, cache, x, expected = Path(sys.argv[1]), sys.argv[2], np.load(sys.argv[3]), np.load(sys.argv[4])
runtime = Runtime(folder, "acme_vision")
for _ in range(int(sys.argv[5])):
    out = runtime.compile_model("alpha", cache_dir=cache)(x)[0]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    runtime.unload()
print("OK")
"""


@pytest.mark.slow
def test_processes_sharing_one_cache_folder(package: Path, key: bytes, tmp_path: Path) -> None:
    if not (REPO / "runtime" / "ovcrypt_runtime" / "_loading" / "cache.py").exists():
        pytest.skip("the encrypted compiled-model cache (ovcrypt_runtime/_loading/cache.py) does not exist yet")
    cache = tmp_path / "cache"
    x = sample_input(256)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", reference_output(tmp_path / "src" / "alpha.xml", x))
    args = [str(package), str(cache), str(tmp_path / "x.npy"), str(tmp_path / "expected.npy")]
    cmd = [sys.executable, "-c", CACHE_WORKER, *args]
    env = {"OVCRYPT_KEY": key.hex()}
    # cold: three processes race to fill the same entry, each reloading from it several times
    assert _finish([_start([*cmd, "4"], env, cwd=REPO) for _ in range(3)]) == ["OK\n"] * 3
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 1 and entries[0].endswith(".ovc"), entries  # one whole entry, no temporary files
    # warm: the entry is read by two processes at once
    assert _finish([_start([*cmd, "2"], env, cwd=REPO) for _ in range(2)]) == ["OK\n"] * 2
    assert sorted(p.name for p in cache.iterdir()) == entries


def test_unavailable_device_is_refused_before_decrypting(package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The device is checked on a helper thread while the key is found, yet refused before any segment
    is decrypted, and the error is the DeviceError that names it."""
    from ovcrypt_runtime._errors import DeviceError
    from ovcrypt_runtime._format.spec import SegmentCipher

    decrypted: list[int] = []
    real = SegmentCipher.decrypt_segment

    def counting(self: SegmentCipher, index: int, *args: Any) -> None:
        decrypted.append(index)
        real(self, index, *args)

    monkeypatch.setattr(SegmentCipher, "decrypt_segment", counting)
    runtime = runtime_for(package)
    with pytest.raises(DeviceError, match="NOSUCHDEVICE"):
        runtime.compile_model("alpha", device="NOSUCHDEVICE")
    assert decrypted == []
    runtime.compile_model("alpha")
    assert decrypted
