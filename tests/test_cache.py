"""The encrypted compiled-model cache: warm starts, keying, atomic writes, and never trusting a bad entry."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from ovcrypt_runtime._errors import IntegrityError, ModelNotFoundError
from ovcrypt_runtime._format.layout import CACHE_DIR_ENV
from ovcrypt_runtime._format.private import modes_mean_something
from ovcrypt_runtime._format.spec import Role, parse_header
from ovcrypt_runtime._loading import cache as _cache
from ovcrypt_runtime._loading.runtime import Runtime
from tests.helpers import (
    REPO,
    encrypted_path,
    find_leaks,
    make_ir,
    plaintext_windows,
    reference_output,
    render_folder,
    runtime_for,
    sample_input,
)

# Run on Linux, and on macOS and Windows as simulated (tests/platforms.py, issue 21).
pytestmark = pytest.mark.usefixtures("simulated_platform")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_ir(tmp_path / "src" / "detector.xml", 256 << 10)


@pytest.fixture
def folder(tmp_path: Path, model: Path, key: bytes, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OVCRYPT_KEY", key.hex())
    return render_folder(tmp_path / "_ovcrypt", {"detector": model}, key, cache=True)


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.ovc"))


def check_output(rt: Runtime, model: Path, **kwargs: object) -> None:
    x = sample_input()
    out = np.asarray(rt.compile_model("detector", **kwargs)(x)[0])  # type: ignore[arg-type]
    np.testing.assert_allclose(out, reference_output(model, x), rtol=1e-5, atol=1e-5)


def test_cold_then_warm_start(folder: Path, model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    check_output(runtime_for(folder), model, cache_dir=cache)
    [entry] = entries(cache)
    assert len(entry.stem) == 64 and int(entry.stem, 16) >= 0
    assert not [p for p in cache.iterdir() if p.suffix != ".ovc"], "no temporary file is left behind"
    header, _, _ = parse_header(entry.read_bytes()[:512], "entry")
    assert header.role == Role.COMPILED and header.name == entry.stem
    # The warm start uses the entry alone: the model's weights are not decrypted again (only the two
    # headers are authenticated), so segments of the .bin can be garbage and it still starts.
    bin_file = encrypted_path(folder, "detector", Role.BIN)
    data = bytearray(bin_file.read_bytes())
    data[-1000:] = bytes(1000)
    bin_file.write_bytes(bytes(data))
    before = entry.stat().st_mtime_ns
    check_output(runtime_for(folder), model, cache_dir=cache)
    assert entry.stat().st_mtime_ns == before, "a good entry is not rewritten"
    # ... but a missing or replaced model file is noticed even with a warm cache.
    bin_file.unlink()
    with pytest.raises(IntegrityError, match=r"detector\.bin\.ovc: is missing"):
        runtime_for(folder).compile_model("detector", cache_dir=cache)


def test_environment_variable(folder: Path, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "env-cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(cache))
    check_output(runtime_for(folder), model)
    assert len(entries(cache)) == 1


def test_off_by_default(folder: Path, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.rglob("*"))
    check_output(runtime_for(folder), model)
    assert set(tmp_path.rglob("*")) == before


def test_entry_is_encrypted_and_random(folder: Path, model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    runtime_for(folder).compile_model("detector", cache_dir=cache)
    [entry] = entries(cache)
    data = entry.read_bytes()
    assert len(zlib.compress(data, 9)) >= len(data), "zlib must not be able to compress a cache entry"
    assert not find_leaks(plaintext_windows([model.with_suffix(".bin")], step=1024), [(entry.name, data)])


def test_key_covers_config_and_model(
    folder: Path, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    rt = runtime_for(folder)
    rt.compile_model("detector", cache_dir=cache)
    rt.compile_model("detector", config={"PERFORMANCE_HINT": "THROUGHPUT"}, cache_dir=cache)
    rt.compile_model("detector", config={"INFERENCE_NUM_THREADS": 1}, cache_dir=cache)
    assert len(entries(cache)) == 3
    # A rebuild of the same model under another key is another model: its own entry.
    other = secrets.token_bytes(32)
    folder2 = render_folder(tmp_path / "other" / "_ovcrypt", {"detector": model}, other)
    monkeypatch.setenv("OVCRYPT_KEY", other.hex())
    runtime_for(folder2).compile_model("detector", cache_dir=cache)
    assert len(entries(cache)) == 4


def test_entry_name_components() -> None:
    base = (b"k" * 16, ["m", "a" * 64, "b" * 64], "CPU", [("A", "1")], "2026.4", "cpu")
    name = _cache.entry_name(*base)
    assert name == _cache.entry_name(*base)
    assert name == _cache.entry_name(base[0], base[1], "CPU", [("A", "1")], "2026.4", "cpu")
    variants = [
        (b"j" * 16, *base[1:]),
        (base[0], ["m", "a" * 64, "c" * 64], *base[2:]),
        (*base[:2], "GPU", *base[3:]),
        (*base[:3], [("A", "2")], *base[4:]),
        (*base[:4], "2026.3", base[5]),
        (*base[:5], "other cpu"),
    ]
    assert len({_cache.entry_name(*v) for v in variants} | {name}) == len(variants) + 1


def corrupt_flip(entry: Path) -> None:
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0x01
    entry.write_bytes(bytes(data))


def corrupt_truncate(entry: Path) -> None:
    entry.write_bytes(entry.read_bytes()[:-100])


def corrupt_append(entry: Path) -> None:
    entry.write_bytes(entry.read_bytes() + b"\x00")


def corrupt_garbage(entry: Path) -> None:
    entry.write_bytes(os.urandom(4096))


def corrupt_empty(entry: Path) -> None:
    entry.write_bytes(b"")


def corrupt_header(entry: Path) -> None:
    data = bytearray(entry.read_bytes())
    data[80] ^= 0x01  # inside the entry's name: the header tag no longer matches
    entry.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage", [corrupt_flip, corrupt_truncate, corrupt_append, corrupt_garbage, corrupt_empty, corrupt_header]
)
def test_corrupt_entry_is_discarded_and_rebuilt(folder: Path, model: Path, tmp_path: Path, damage: object) -> None:
    cache = tmp_path / "cache"
    runtime_for(folder).compile_model("detector", cache_dir=cache)
    [entry] = entries(cache)
    damage(entry)  # type: ignore[operator]
    with pytest.warns(RuntimeWarning, match="discarded compiled-model cache entry"):
        check_output(runtime_for(folder), model, cache_dir=cache)
    [rebuilt] = entries(cache)
    assert rebuilt == entry
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_output(runtime_for(folder), model, cache_dir=cache)  # the rebuilt entry is good


def test_foreign_entries_are_refused(
    folder: Path, model: Path, tmp_path: Path, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    rt = runtime_for(folder)
    rt.compile_model("detector", cache_dir=cache)
    [default] = entries(cache)
    rt.compile_model("detector", config={"PERFORMANCE_HINT": "THROUGHPUT"}, cache_dir=cache)
    [throughput] = [e for e in entries(cache) if e != default]
    # An entry moved to another entry's name: authentic, but compiled for something else.
    os.replace(throughput, default)
    with pytest.warns(RuntimeWarning, match="discarded"):
        check_output(runtime_for(folder), model, cache_dir=cache)
    # An entry written under another key, placed under this name.
    good = default.read_bytes()
    other_cache = tmp_path / "other-cache"
    other = secrets.token_bytes(32)
    folder2 = render_folder(tmp_path / "other" / "_ovcrypt", {"detector": model}, other)
    monkeypatch.setenv("OVCRYPT_KEY", other.hex())
    runtime_for(folder2).compile_model("detector", cache_dir=other_cache)
    [foreign] = entries(other_cache)
    default.write_bytes(foreign.read_bytes())
    monkeypatch.setenv("OVCRYPT_KEY", key.hex())
    with pytest.warns(RuntimeWarning, match="discarded"):
        check_output(runtime_for(folder), model, cache_dir=cache)
    assert default.read_bytes() != foreign.read_bytes() and len(default.read_bytes()) == len(good)


def test_unknown_model_with_cache(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        runtime_for(folder).compile_model("nope", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_unwritable_cache_only_warns(folder: Path, model: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.warns(RuntimeWarning, match="cannot write"):
        check_output(runtime_for(folder), model, cache_dir=blocker / "cache")


def test_threads_share_one_compile(folder: Path, tmp_path: Path) -> None:
    rt = runtime_for(folder)
    cache = tmp_path / "cache"
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(rt.compile_model("detector", cache_dir=cache))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(r is results[0] for r in results)
    assert len(entries(cache)) == 1


CHILD = """
import sys
from tests.helpers import runtime_for, sample_input
rt = runtime_for(__import__("pathlib").Path(sys.argv[1]))
compiled = rt.compile_model("detector", cache_dir=sys.argv[2])
print(float(compiled(sample_input())[0].sum()))
"""


def test_concurrent_processes(folder: Path, model: Path, tmp_path: Path, key: bytes) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "OVCRYPT_KEY": key.hex(), "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "error"}
    cmd = [sys.executable, "-c", CHILD, str(folder), str(cache)]
    procs = [
        subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    assert len({out for out, _ in outputs}) == 1
    assert [p.suffix for p in cache.iterdir()] == [".ovc"]
    expected = float(reference_output(model, sample_input()).sum())
    assert float(outputs[0][0]) == pytest.approx(expected, rel=1e-4)


# --- warnings: one per problem, attributed to the caller's line, not to the runtime's modules --------
# Each case prepares a problem under `root` (an empty folder) and returns the cache_dir to pass.


def _entry_replaced_by_fifo(folder: Path, root: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs FIFOs (os.mkfifo)")
    runtime_for(folder).compile_model("detector", cache_dir=root)
    [entry] = entries(root)
    entry.unlink()
    os.mkfifo(entry)
    return root


def _entry_corrupted(folder: Path, root: Path) -> Path:
    runtime_for(folder).compile_model("detector", cache_dir=root)
    corrupt_flip(entries(root)[0])
    return root


def _cache_is_a_file(folder: Path, root: Path) -> Path:
    (root / "cache").write_text("")
    return root / "cache"


def _cache_is_shared(folder: Path, root: Path) -> Path:
    if not modes_mean_something():
        pytest.skip("mode bits mean nothing here (Windows): test_platforms has the folder outside the profile")
    root.chmod(0o777)
    return root


def _cache_is_below_a_file(folder: Path, root: Path) -> Path:
    (root / "blocker").write_text("")
    return root / "blocker" / "cache"


WARNING_CASES = {
    "entry is a FIFO": (_entry_replaced_by_fifo, "ignored compiled-model cache entry"),
    "entry corrupted": (_entry_corrupted, "discarded compiled-model cache entry"),
    "cache_dir is a file": (_cache_is_a_file, "not using the compiled-model cache folder"),
    "cache_dir writable by others": (_cache_is_shared, "not using the compiled-model cache folder"),
    "cache_dir cannot be made": (_cache_is_below_a_file, "cannot write compiled-model cache entry"),
}


@pytest.mark.parametrize("case", list(WARNING_CASES))
def test_each_cache_problem_warns_once_at_the_callers_line(folder: Path, tmp_path: Path, case: str) -> None:
    prepare, text = WARNING_CASES[case]
    root = tmp_path / "cache-root"
    root.mkdir(mode=0o700)
    cache = prepare(folder, root)
    rt = runtime_for(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        rt.compile_model("detector", cache_dir=cache)
    ours = [str(w.message) for w in caught if "hatch-ovcrypt" in str(w.message)]
    assert len(ours) == 1 and text in ours[0], ours
    [warning] = [w for w in caught if "hatch-ovcrypt" in str(w.message)]
    assert warning.category is RuntimeWarning
    assert (warning.filename, warning.lineno) == (__file__, line), "the warning must name the caller's line"


def test_warning_of_a_vendored_runtime_names_the_import_line(folder: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The runtime as a product ships it (its own copy), reached by a lazy `from ... import model`: the warning
    names the import statement, through importlib's frames."""
    blocker = tmp_path / "cache-file"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_DIR_ENV, str(blocker))
    monkeypatch.syspath_prepend(str(folder.parent))
    monkeypatch.delitem(sys.modules, "_ovcrypt", raising=False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            line = sys._getframe().f_lineno + 1
            from _ovcrypt import detector  # type: ignore[import-not-found]  # noqa: F401
    finally:
        for name in [m for m in sys.modules if m == "_ovcrypt" or m.startswith("_ovcrypt.")]:
            del sys.modules[name]
    ours = [w for w in caught if "hatch-ovcrypt" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert (ours[0].filename, ours[0].lineno) == (__file__, line)
