"""Memory files (ovcrypt_runtime/_pipelines/memfiles.py) and process hardening (ovcrypt_runtime/_hardening.py),
issue 17 items 2, 3 and 7.

Another process of the same user plays the attacker: it cannot rewrite a sealed memory file, and after
harden_process() it cannot open the process's /proc/<pid>/fd/N or /proc/<pid>/mem at all. When the tests run as
root, both run without capabilities (setpriv), as ordinary same-user processes would.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ovcrypt_runtime._errors import UnsupportedModelError
from ovcrypt_runtime._hardening import dont_dump
from ovcrypt_runtime._keys.sources import _Secret
from ovcrypt_runtime._loading.loader import owned_buffer
from ovcrypt_runtime._pipelines import memfiles as _memfiles
from ovcrypt_runtime._pipelines.memfiles import MemoryFolder, memory_backed_dir, memory_folder
from tests.helpers import REPO

fcntl = pytest.importorskip("fcntl", reason="memory files and their seals are POSIX (Linux) only")

LINUX = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")
SECRET = b'{"secret": "the decrypted config of a model, long enough to be found by a scan"}'


def same_user() -> list[str]:
    """A command prefix for a process of this user with no capabilities. As root, a process has CAP_SYS_PTRACE,
    which harden_process() does not stop, and the kernel lets a process without it look into only a process
    whose capabilities are a subset of its own: so as root, the target and the attacker both run without any."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv to drop capabilities")
    return [setpriv, "--bounding-set=-all", "--inh-caps=-all"]


def attacker(code: str, *args: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `code` in another process of this user (with this process's capabilities unless `prefix` says)."""
    cmd = [*(prefix or []), sys.executable, "-c", textwrap.dedent(code), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)


TRY_WRITE = """
import os, sys
path = sys.argv[1]
try:
    fd = os.open(path, os.O_WRONLY)
except OSError as exc:
    print("open", exc.errno); raise SystemExit
for what, call in (("write", lambda: os.write(fd, b"{}")), ("truncate", lambda: os.ftruncate(fd, 0)),
                   ("grow", lambda: os.ftruncate(fd, 1 << 20))):
    try:
        call(); print(what, "ok")
    except OSError as exc:
        print(what, exc.errno)
"""


def fd_path(link: Path) -> str:
    """The /proc/<pid>/fd/N that another process would use for the memory file behind one of our links."""
    target = os.readlink(link)
    assert target.startswith("/proc/self/fd/"), target
    return f"/proc/{os.getpid()}/fd/{target.rsplit('/', 1)[1]}"


@LINUX
def test_memfds_are_sealed_before_anything_links_to_them() -> None:
    data = {"config.json": SECRET, "sub/preprocessor_config.json": b"[1, 2, 3]"}
    with memory_folder(data) as folder:
        for relpath, content in data.items():
            link = folder / relpath
            assert link.is_symlink() and link.read_bytes() == content
            fd = int(os.readlink(link).rsplit("/", 1)[1])
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            for seal in (fcntl.F_SEAL_WRITE, fcntl.F_SEAL_GROW, fcntl.F_SEAL_SHRINK, fcntl.F_SEAL_SEAL):
                assert seals & seal
            out = attacker(TRY_WRITE, fd_path(link)).stdout.split("\n")
            assert out[:3] == [f"write {errno.EPERM}", f"truncate {errno.EPERM}", f"grow {errno.EPERM}"], out
            assert link.read_bytes() == content
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert not folder.exists()


@LINUX
def test_fill_writes_in_place_and_seals_and_writable_takes_a_path_writer() -> None:
    weights = np.random.default_rng(1).integers(0, 256, 3 << 20, dtype=np.uint8)
    with MemoryFolder() as folder:
        with folder.fill("model/openvino_model.bin", weights.nbytes) as view:
            view[:] = weights.data
        assert (folder.path / "model/openvino_model.bin").read_bytes() == weights.tobytes()
        mapped = folder.map("model/openvino_model.bin")
        assert mapped is not None and mapped[:] == weights.tobytes()
        address = np.frombuffer(mapped, np.uint8).ctypes.data
        assert "dd" in vm_flags(address) and "dc" not in vm_flags(address)
        link = folder.writable("model.xml")
        link.write_bytes(b"<net/>")  # a writer that takes only a path, such as ov.save_model
        folder.seal("model.xml")
        assert folder.read_bytes("model.xml") == b"<net/>"
        with pytest.raises(PermissionError):
            link.write_bytes(b"<other/>")
        with pytest.raises(ValueError, match="is not a relative path"):
            folder.add("../escape.json", b"{}")
        with pytest.raises(ValueError, match="already"):
            folder.add("model.xml", b"{}")
    assert mapped[:6] == weights.tobytes()[:6]  # the mapping outlives the folder: it is the file's one copy
    mapped.close()


@pytest.fixture
def no_memfd(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A Linux without memfd_create (before 3.17, or a seccomp filter): the tmpfs fallback."""
    if memory_backed_dir() is None:
        pytest.skip("no tmpfs at /dev/shm")
    monkeypatch.delattr(os, "memfd_create")
    yield


@LINUX
def test_tmpfs_fallback_never_names_plaintext(no_memfd: None) -> None:
    shm = memory_backed_dir()
    assert shm is not None
    before = set(os.listdir(shm))
    with memory_folder({"config.json": SECRET}) as folder:
        assert set(os.listdir(shm)) == before  # O_TMPFILE: the file has no name at all
        link = folder / "config.json"
        assert link.read_bytes() == SECRET
        fd = int(os.readlink(link).rsplit("/", 1)[1])
        assert os.fstat(fd).st_nlink == 0 and os.fstat(fd).st_mode & 0o777 == 0o400
    assert set(os.listdir(shm)) == before


def test_without_memory_files_the_refusal_names_platform_and_reason(
    no_memfd: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_memfiles, "memory_backed_dir", lambda *_: None)
    wanted = rf"this system \({sys.platform}\) has neither a usable memfd_create nor a writable tmpfs at /dev/shm, "
    with pytest.raises(UnsupportedModelError, match="^" + wanted + r".*never writes decrypted files to disk$"):
        MemoryFolder()
    genai = r"^openvino-genai reads this model's configs only from files, but " + wanted
    with pytest.raises(UnsupportedModelError, match=genai), memory_folder({"config.json": b"{}"}):
        pass
    monkeypatch.setattr(_memfiles, "PROC_FD", Path("/nonexistent/proc/self/fd"))
    with pytest.raises(UnsupportedModelError, match=r"has no /proc/self/fd"):
        MemoryFolder()


@LINUX
def test_link_folders_of_dead_processes_are_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead = int(child.stdout)
    namespace = os.stat("/proc/self/ns/pid").st_ino
    stale = tmp_path / f"ovcrypt-mem-{namespace}-{dead}-abc"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "config.json").symlink_to("/proc/self/fd/99")
    alive = tmp_path / f"ovcrypt-mem-{namespace}-{os.getppid()}-abc"  # a live process's folder stays
    alive.mkdir()
    other_ns = tmp_path / f"ovcrypt-mem-{namespace + 1}-{dead}-abc"  # a pid of another namespace means nothing here
    other_ns.mkdir()
    with MemoryFolder() as folder:
        assert not stale.exists() and alive.exists() and other_ns.exists()
        assert folder.path.parent == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other_ns.name])


# --- harden_process ------------------------------------------------------------------------------------------

TARGET = """
import os, sys
from ovcrypt_runtime import _hardening as _hardening
from ovcrypt_runtime._pipelines.memfiles import memory_folder
with memory_folder({"config.json": b'{"secret": 1}'}) as folder:
    fd = os.readlink(folder / "config.json").rsplit("/", 1)[1]
    print(os.getpid(), fd, flush=True)
    sys.stdin.readline()  # the first look, before hardening
    print(_hardening.harden_process(), flush=True)
    sys.stdin.readline()
"""

LOOK = """
import sys
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as f:
            if "/fd/" in path:
                f.read(1)
        print("ok")
    except OSError as exc:
        print(type(exc).__name__)
"""


@LINUX
def test_harden_process_closes_proc_fd_and_mem_to_the_same_user() -> None:
    prefix = same_user()
    target = subprocess.Popen([*prefix, sys.executable, "-c", TARGET], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    assert target.stdin is not None and target.stdout is not None
    try:
        pid, fd = target.stdout.readline().split()
        paths = [f"/proc/{pid}/fd/{fd}", f"/proc/{pid}/mem"]
        assert attacker(LOOK, *paths, prefix=prefix).stdout.split() == ["ok", "ok"]  # the attacker can, before
        target.stdin.write("\n")
        target.stdin.flush()
        assert target.stdout.readline().strip() == "True"
        assert attacker(LOOK, *paths, prefix=prefix).stdout.split() == ["PermissionError", "PermissionError"]
        target.stdin.write("\n")
        target.stdin.flush()
        assert target.wait(timeout=60) == 0
    finally:
        target.kill()
        target.wait()


# --- MADV_DONTDUMP -------------------------------------------------------------------------------------------


def vm_flags(address: int) -> list[str]:
    """The VmFlags of the mapping of /proc/self/smaps that holds `address`."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and line.startswith("VmFlags:"):
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@LINUX
@pytest.mark.parametrize("size", [100, 64 << 10, 5 << 20])
def test_decrypted_buffers_are_left_out_of_core_dumps_and_stay_in_forked_children(size: int) -> None:
    buf = owned_buffer(size)
    buf[:] = np.arange(size, dtype=np.uint64).astype(np.uint8)
    for address in (buf.ctypes.data, buf.ctypes.data + size - 1):
        assert "dd" in vm_flags(address)
        assert "dc" not in vm_flags(address)  # never MADV_DONTFORK: pre-forking servers need the weights
    expected = int(buf.sum(dtype=np.uint64))
    pid = os.fork()
    if pid == 0:  # the child reads the buffer, then leaves at once (no atexit, no pytest teardown)
        os._exit(0 if int(buf.sum(dtype=np.uint64)) == expected else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@LINUX
def test_kept_keys_are_left_out_of_core_dumps() -> None:
    key = bytes(range(100, 132))
    secret = _Secret(key)
    assert "dd" in vm_flags(id(secret.reveal()))


def test_dont_dump_refuses_nothing_it_cannot_do() -> None:
    assert dont_dump(0, 0) is False


# --- killed mid-way: nothing named holds plaintext -----------------------------------------------------------

# Each child hides memfd_create (a Linux without it: the tmpfs fallback) and stalls where its plaintext is in memory
# files: the conversion just after ov.save_model wrote the IR, the pipeline build where openvino-genai would read
# the config folder. The stall is only a pause; everything before it is the real code.
KILLED_CHILD = """
import os, sys, time
from pathlib import Path
del os.memfd_create

def stall(*args, **kwargs):
    print("ready", flush=True)
    time.sleep(300)

if sys.argv[1] == "convert":
    import openvino as ov
    save = ov.save_model
    ov.save_model = lambda *a, **k: (save(*a, **k), stall())
    from hatch_ovcrypt.sources.convert import ConversionOptions, convert_to_ir
    convert_to_ir(Path(sys.argv[2]), ConversionOptions(compress_to_fp16=False))
else:
    import openvino_genai
    openvino_genai.VLMPipeline = stall
    from ovcrypt_runtime._pipelines import genai as _genai
    from ovcrypt_runtime._loading.runtime import Runtime
    rt = Runtime(Path(sys.argv[2]), "acme_vision")
    rt.keyring.add(bytes.fromhex(sys.argv[3]))
    _genai.vlm_pipeline(rt, "vision", "CPU", {})
"""


def _converted_ir(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    from hatch_ovcrypt.sources.convert import ConversionOptions, convert_to_ir
    from tests.test_convert import onnx_mlp, save_onnx

    source = save_onnx(onnx_mlp(4, seed=17), tmp_path / "src" / "mlp.onnx")
    with convert_to_ir(source, ConversionOptions(compress_to_fp16=False)) as ir:
        return source, {"model.bin": bytes(ir.bin)}  # random weights; any small IR's XML looks much like this one's


def _encrypted_vlm(tmp_path: Path) -> tuple[list[str], dict[str, bytes]]:
    from tests.test_genai import VLM, render

    key = bytes(range(40, 72))
    folder = render(tmp_path / "vlm", {"vision": VLM}, key)
    configs = {p.name: p.read_bytes() for p in VLM.iterdir() if p.suffix not in (".xml", ".bin")}
    return [str(folder), key.hex()], {name: data for name, data in configs.items() if len(data) >= 32}


@LINUX
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("what", ["convert", "vlm_pipeline"])
def test_a_process_killed_mid_way_leaves_no_plaintext(what: str, sig: signal.Signals, tmp_path: Path) -> None:
    from tests.leakscan import LeakScanner
    from tests.test_convert import _new_files, _snapshot

    shm = memory_backed_dir()
    if shm is None:
        pytest.skip("no tmpfs at /dev/shm")
    if what == "convert":
        source, plaintexts = _converted_ir(tmp_path)
        args = [str(source)]
    else:
        args, plaintexts = _encrypted_vlm(tmp_path)
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    watched = [shm, private_tmp]  # the child's temp folder is private_tmp: the system's gets other tests' files
    before = _snapshot(watched)
    env = {**os.environ, "TMPDIR": str(private_tmp)}
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, what, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)  # fmt: skip
    assert child.stdout is not None
    try:
        ready = child.stdout.readline()
        assert ready == "ready\n", (ready, child.stderr.read() if child.stderr else "")
        child.send_signal(sig)
        assert child.wait(timeout=60) == -sig
    finally:
        child.kill()
        child.wait()
    scanner = LeakScanner(plaintexts)
    left = list(_new_files(before, _snapshot(watched)))
    leaks = scanner.scan_blobs((str(p), p.read_bytes()) for p in left if p.stat().st_size < 256 << 20)
    assert not leaks, leaks
    # What a killed process leaves in its temp folder is one folder of links to memory files that went with it
    leftovers = list(private_tmp.rglob("*"))
    assert leftovers and all(p.is_symlink() or p.is_dir() for p in leftovers), leftovers
    assert all(os.readlink(p).startswith("/proc/self/fd/") for p in leftovers if p.is_symlink())
    with pytest.MonkeyPatch.context() as mp:  # and the next memory folder of this user sweeps it away
        mp.setattr(tempfile, "tempdir", str(private_tmp))
        with MemoryFolder() as folder:
            assert [p.name for p in private_tmp.iterdir()] == [folder.path.name]
    assert list(private_tmp.iterdir()) == []


@LINUX
@pytest.mark.parametrize("check", ["test_vlm_pipeline_generates_what_the_plain_folder_generates",
                                   "test_text2image_pipeline_gives_the_plain_folders_pixels"])  # fmt: skip
def test_pipelines_built_through_the_tmpfs_fallback_match_the_plain_folder(
    no_memfd: None, check: str, tmp_path: Path
) -> None:
    """openvino-genai reads its configs through links to unnamed O_TMPFILE files just as through memfds."""
    from tests import test_genai

    getattr(test_genai, check)(tmp_path)
