"""Issue 5, leak suite: no plaintext model bytes and no key material anywhere they could be picked up.

Plaintext: every 32-byte window of each plaintext .xml and .bin (at every offset, see tests/leakscan.py) is looked
for in the wheel and sdist (and their members), the build folder and the temporary folder after a build; in the
temporary, cache and current folders after a model is loaded and run; and after builds that fail halfway.
Keys: never in build output at the highest verbosity, in error messages, or in repr()/inspect output.
"""

from __future__ import annotations

import inspect
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ovcrypt_runtime._errors import OvcryptError
from ovcrypt_runtime._format.reader import read_header
from ovcrypt_runtime._format.spec import Role, SegmentCipher
from tests.helpers import (
    REPO,
    encrypted_path,
    make_ir,
    only_wheel,
    reference_output,
    render_folder,
    runtime_for,
    sample_input,
    unpack,
    write_product,
)
from tests.leakscan import LeakScanner, archive_blobs, tree_blobs

resource = pytest.importorskip("resource", reason="the leak tests limit child processes with resource (POSIX)")

Counter = Callable[[str, int], None]
# Seeds no other test uses, so that another test's identical plaintext elsewhere in /tmp is never mistaken for a leak.
MODELS = {"detector": (int(1.5 * (1 << 20)), 256, 5101), "tiny": (48 << 10, 64, 5102)}
ASSISTANT = REPO / "tests" / "fixtures" / "tiny_llm"


@dataclass(frozen=True)
class Built:
    project: Path
    key: bytes
    dist: Path
    tmp: Path  # TMPDIR of the build
    output: str  # stdout + stderr of the build, at the highest verbosity
    plaintexts: list[Path]
    system_temp_before: set[str]


def make_project(root: Path) -> tuple[Path, list[Path]]:
    project = root / "project"
    plaintexts = []
    for name, (size, width, seed) in MODELS.items():
        xml = make_ir(project / "models" / f"{name}.xml", size, seed=seed, width=width)
        plaintexts += [xml, xml.with_suffix(".bin")]
    shutil.copytree(ASSISTANT, project / "models" / "assistant")  # a folder model: every file of it is scanned for
    plaintexts += sorted(p for p in (project / "models" / "assistant").rglob("*") if p.is_file())
    models = {**{name: f"models/{name}.xml" for name in MODELS}, "assistant": "models/assistant"}
    write_product(project, models, extra_hook_options="compiled-model-cache = true")  # the cache is scanned too
    return project, plaintexts


def build(project: Path, env: dict[str, str], tmp: Path, *targets: str, outdir: Path | None = None,
          preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`python -m build -v` (non-isolated) with the highest hatchling verbosity and a private TMPDIR."""
    tmp.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OVCRYPT_")}
    cmd = [sys.executable, "-m", "build", "-v", "--no-isolation", *targets, str(project)]
    cmd += ["--outdir", str(outdir or project / "dist")]
    full_env = {**clean, "TMPDIR": str(tmp), "HATCH_VERBOSE": "3", **env}
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, check=False, timeout=300,
                          preexec_fn=preexec_fn)  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("leaks")
    project, plaintexts = make_project(root)
    key = os.urandom(32)
    before = system_temp_entries()
    result = build(project, {"OVCRYPT_KEY": key.hex()}, root / "tmp", "--sdist", "--wheel")
    assert result.returncode == 0, result.stdout + result.stderr
    return Built(project, key, project / "dist", root / "tmp", result.stdout + result.stderr, plaintexts, before)


def assert_no_leaks(scanner: LeakScanner, blobs: Iterable[tuple[str, bytes]], suite_count: Counter) -> int:
    before, bytes_before = scanner.blobs_scanned, scanner.bytes_scanned
    leaks = scanner.scan_blobs(blobs)
    assert not leaks, leaks
    suite_count("leak windows scanned (plaintext windows x files)", scanner.windows * (scanner.blobs_scanned - before))
    suite_count("leak bytes scanned", scanner.bytes_scanned - bytes_before)
    return scanner.blobs_scanned - before


def system_temp_entries() -> set[str]:
    return set(os.listdir(tempfile.gettempdir()))


def new_system_temp_blobs(before: set[str], limit: int = 256 << 20) -> Iterable[tuple[str, bytes]]:
    """Files in entries of the real system temp folder that appeared during the build (should anything ignore
    TMPDIR); other processes' entries may be among them, so big files are skipped and the total is capped."""
    system_tmp = Path(tempfile.gettempdir())
    total = 0
    for name in sorted(system_temp_entries() - before):
        entry = system_tmp / name
        if name.startswith(("pytest-of-", "bash_jobs")) or entry.is_symlink():
            continue
        try:
            files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file() and not p.is_symlink()]
            for path in files:
                size = path.stat().st_size
                if size > (16 << 20) or total + size > limit:
                    continue
                total += size
                data = path.read_bytes()
                yield str(path), data
                yield from archive_blobs(str(path), data)
        except OSError:  # another process's entry, removed while we walk it
            continue


# --- after a build ------------------------------------------------------------------------------


def test_build_leaves_no_plaintext(built: Built, suite_count: Counter) -> None:
    scanner = LeakScanner.of_files(built.plaintexts)
    only_wheel(built.dist)
    for plaintext in built.plaintexts:  # control: a piece of each plaintext is found
        data = plaintext.read_bytes()
        assert str(plaintext) in scanner.leaks_in(b"\0" + (data[-4000:-3000] if len(data) > 4000 else data))
    sdists = sorted(built.dist.glob("*.tar.gz"))
    assert len(sdists) == 1, sorted(built.dist.iterdir())
    blobs = [
        *tree_blobs(built.dist),  # wheel and sdist, raw and member by member
        *tree_blobs(built.project, exclude=[built.project / "models", built.dist]),  # the build folder
        *tree_blobs(built.tmp),  # the build's temp folder
    ]
    names = {name for name, _ in blobs}
    assert any(name.endswith("detector.bin.ovc") for name in names), "the wheel's members were not scanned"
    assert not any("/models/" in name and name.startswith(str(sdists[0]) + "!") for name in names), names
    assert assert_no_leaks(scanner, blobs, suite_count) > 5
    # The real system temp folder too, should anything ignore TMPDIR. Other processes write there meanwhile (CI's
    # own pip unpacks its wheel, whose .exe launchers share byte tables with a tokenizer's .bin), and every IR .xml
    # shares boilerplate with ours, so only the weights made of seeded random numbers (MODELS) count.
    weights = LeakScanner.of_files([built.project / "models" / f"{name}.bin" for name in MODELS])
    assert_no_leaks(weights, new_system_temp_blobs(built.system_temp_before), suite_count)
    assert not list(built.tmp.glob("hatch-ovcrypt-*")), "the build left its staging folder behind"


def test_running_leaves_no_plaintext(built: Built, tmp_path: Path, suite_count: Counter) -> None:
    site = unpack(only_wheel(built.dist), tmp_path / "site")
    cwd, tmp, cache = tmp_path / "cwd", tmp_path / "tmp", tmp_path / "cache"
    for folder in (cwd, tmp, cache):
        folder.mkdir()
    code = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import acme_vision; "
        "x = np.load(sys.argv[2]); "
        "out = [acme_vision.compile_model(n)(x if n == 'detector' else x[:, :64])[0] for n in ('detector', 'tiny')]; "
        "np.save('out.npy', out[0]); "
        "from acme_vision._ovcrypt import llm_pipeline; print(llm_pipeline('assistant').generate('hi'))"
    )
    inputs = sample_input(256)
    np.save(tmp_path / "x.npy", inputs)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OVCRYPT_")}
    env = {**clean, "OVCRYPT_KEY": built.key.hex(), "OVCRYPT_CACHE_DIR": str(cache), "TMPDIR": str(tmp)}
    for _ in range(2):  # a cold start that fills the cache, then a warm start from it
        result = subprocess.run([sys.executable, "-c", code, str(site), str(tmp_path / "x.npy")], cwd=cwd, env=env,
                                capture_output=True, text=True, check=False, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert built.key.hex() not in result.stdout + result.stderr
    expected = reference_output(built.project / "models" / "detector.xml", inputs)
    np.testing.assert_allclose(np.load(cwd / "out.npy"), expected, rtol=1e-4, atol=1e-5)
    assert list(cache.iterdir()), "the encrypted cache was not used, so it was not tested"
    scanner = LeakScanner.of_files(built.plaintexts)
    blobs = [*tree_blobs(cwd), *tree_blobs(tmp), *tree_blobs(cache)]
    assert assert_no_leaks(scanner, blobs, suite_count) >= 2


# --- failed builds --------------------------------------------------------------------------------


def _limit_file_size() -> None:  # in the build's process: writes past 1 MiB fail with EFBIG, as on a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


FAILURES = ["bad key", "bad model xml", "bad model bin", "disk error"]


@pytest.mark.slow
@pytest.mark.parametrize("failure", FAILURES)
def test_failed_build_leaves_nothing(tmp_path: Path, failure: str, suite_count: Counter) -> None:
    project, plaintexts = make_project(tmp_path)
    scanner = LeakScanner.of_files(plaintexts)  # before any damage: the genuine plaintext must not leak
    key = os.urandom(32).hex()
    env = {"OVCRYPT_KEY": key}
    preexec: Callable[[], None] | None = None
    if failure == "bad key":
        env["OVCRYPT_KEY"] = key[:-1]
    elif failure == "bad model xml":
        xml = project / "models" / "tiny.xml"
        xml.write_bytes(xml.read_bytes()[:-200])
    elif failure == "bad model bin":
        weights = project / "models" / "detector.bin"
        weights.write_bytes(weights.read_bytes()[: 1 << 20])
    else:
        preexec = _limit_file_size
    tmp = tmp_path / "tmp"
    result = build(project, env, tmp, "--wheel", preexec_fn=preexec)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert key not in output and key[:-1] not in output
    expected = {"bad key": "OVCRYPT_KEY", "bad model xml": "tiny", "bad model bin": "detector",
                "disk error": "encrypting the models failed: OSError: [Errno 27] File too large"}[failure]  # fmt: skip
    assert expected in output, output
    dist = project / "dist"
    assert not dist.exists() or not list(dist.iterdir()), sorted(dist.iterdir())
    assert not list(tmp.glob("hatch-ovcrypt-*")), "staging folder left behind"
    leftovers = [p for p in project.rglob("*") if p.name.endswith(".tmp") or p.suffix == ".ovc"]
    assert not leftovers, leftovers
    blobs = [*tree_blobs(project, exclude=[project / "models"]), *tree_blobs(tmp)]
    assert_no_leaks(scanner, blobs, suite_count)


# --- key material -----------------------------------------------------------------------------------


def key_forms(key: bytes) -> list[str]:
    return [key.hex(), key.hex().upper(), repr(key)[2:-1], key.hex()[:32], key.hex()[32:]]


def assert_no_key(text: str, key: bytes, what: str) -> None:
    for form in key_forms(key):
        assert form not in text, f"key material in {what}: {text[:2000]}"


def test_build_output_holds_no_key(built: Built, tmp_path: Path) -> None:
    assert "hatch-ovcrypt: encrypted" in built.output  # the verbose output is there, and it names the key id only
    assert_no_key(built.output, built.key, "the build output")
    # rotation: "new,old", and a broken second key
    project, _ = make_project(tmp_path)
    new, old = os.urandom(32), os.urandom(32)
    for value, ok in ((f"{new.hex()},{old.hex()}", True), (f"{new.hex()},{old.hex()[:-3]}", False)):
        result = build(project, {"OVCRYPT_KEY": value}, tmp_path / "tmp", "--wheel")
        assert (result.returncode == 0) is ok, result.stdout + result.stderr
        for key in (new, old):
            assert_no_key(result.stdout + result.stderr, key, "the build output")
            assert old.hex()[:-3] not in result.stdout + result.stderr


def _objects_holding_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, list[object]]:
    key = os.urandom(32)
    xml = make_ir(tmp_path / "src" / "m.xml", 64 << 10, seed=5103)
    folder = render_folder(tmp_path / "_ovcrypt", {"m": xml}, key)
    monkeypatch.setenv("OVCRYPT_KEY", key.hex())
    runtime = runtime_for(folder)
    compiled = runtime.compile_model("m")
    path = encrypted_path(folder, "m", Role.BIN)
    with path.open("rb") as f:
        header, raw, tag = read_header(f, path.name)
    cipher = SegmentCipher.open(key, header, raw, tag, path.name)
    return key, [runtime, runtime.keyring, runtime.files.manifest, header, cipher, compiled]


def test_repr_and_messages_hold_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, objects = _objects_holding_keys(tmp_path, monkeypatch)
    for obj in objects:
        assert_no_key(repr(obj) + str(obj), key, f"repr() of {type(obj).__name__}")
    runtime = objects[0]
    assert isinstance(runtime, type(runtime_for(tmp_path)))
    runtime.keyring.add(key)
    assert_no_key(repr(runtime.keyring), key, "repr() of a KeyRing holding a key")
    # messages: every kind of failure, with the right key and wrong ones on offer
    messages = []
    wrong = os.urandom(32)
    for value in (wrong.hex(), wrong.hex()[:-1], "x" + wrong.hex()[1:], f"{wrong.hex()},{key.hex()[:-2]}"):
        monkeypatch.setenv("OVCRYPT_KEY", value)
        fresh = runtime_for(tmp_path / "_ovcrypt")
        with pytest.raises(OvcryptError) as info:
            fresh.read_model("m")
        messages.append(str(info.value) + repr(info.value))
    for message in messages:
        assert_no_key(message, key, "an error message")
        assert_no_key(message, wrong, "an error message")


def test_inspect_of_runtime_objects_holds_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, objects = _objects_holding_keys(tmp_path, monkeypatch)
    for obj in objects[:4]:  # runtime, keyring (keys from the environment), manifest, header
        assert_no_key(repr(inspect.getmembers(obj)), key, f"inspect.getmembers() of {type(obj).__name__}")


def test_inspect_of_keyring_after_set_key_holds_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, objects = _objects_holding_keys(tmp_path, monkeypatch)
    keyring = objects[1]
    assert hasattr(keyring, "add")
    keyring.add(key)
    assert_no_key(repr(inspect.getmembers(keyring)), key, "inspect.getmembers() of a KeyRing after set_key()")


def test_scanner_finds_a_planted_leak(tmp_path: Path) -> None:
    """The scanner itself: a 32-byte window at any offset is found, in a file or inside an archive."""
    data = os.urandom(300_000)
    scanner = LeakScanner({"p": data})
    noise = os.urandom(100_000)
    for offset in (0, 1, 4097, 123_457, len(data) - 32):
        assert scanner.leaks_in(noise[:777] + data[offset : offset + 32] + noise) == ["p"]
    assert scanner.leaks_in(noise[:777] + data[5:36] + noise) == []  # 31 bytes are not a window
    folder = tmp_path / "planted"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.bin").write_bytes(noise + data[200:232])
    shutil.make_archive(str(tmp_path / "arch"), "zip", folder)
    assert scanner.scan_tree(folder)
    assert scanner.scan_tree(tmp_path, exclude=[folder])  # the zip's member is found decompressed
