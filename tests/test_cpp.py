"""Issue 14: the C++ reader (cpp/) reads what the Python runtime reads and refuses what it refuses.

The C++ project is built once per session (cmake, against the openvino wheel's own C++ package and the
system's OpenSSL and nlohmann-json). Its `ovcrypt_dump` example and `ovcrypt_test_driver` then run on:

* FORMAT.md's test vectors (parsed by tests/test_format.py's reader, the two-segment file rebuilt by its
  independent implementation): every field the C++ reader derives equals the document's;
* packages rendered by the build hook's own code, and a real built wheel: every file decrypts to exactly
  its plaintext, the model compiles, and inference is bit-identical to the Python runtime's;
* every kind of tampering of the Python tamper suite (tests/test_tamper.py, whose corpus and helpers are
  reused): the C++ reader refuses each case with the same error class as the Python runtime (the oracle)
  and leaves no plaintext in a buffer whose decryption failed; ovcrypt_dump exits 1 with one line;
* bad, wrong and missing keys, and a manifest whose canonical JSON needs escaping;
* manifest v2 folder models, written here from FORMAT.md and the v2 design with the independent writer.

The tests never depend on the manifest's version: the Python runtime is the oracle, and the files are found
by their documented names. Without cmake, a C++ compiler, OpenSSL's or nlohmann-json's headers they skip
(on CI they fail instead: .ci/run installs all of them).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import pytest

from ovcrypt_runtime._errors import OvcryptError
from ovcrypt_runtime._format.layout import MANIFEST_NAME
from ovcrypt_runtime._format.spec import TAG_SIZE, Role
from ovcrypt_runtime._keys.sources import MAX_KEY_FILE_BYTES
from tests.helpers import (
    REPO,
    build_wheel,
    encrypted_path,
    make_ir,
    only_wheel,
    runtime_for,
    sample_input,
    write_product,
)
from tests.test_format import doc_vectors, ind_encrypt, ind_hkdf, vector_plaintext
from tests.test_tamper import (  # the tamper suite's corpus and its kinds of damage, reused as they are
    MODELS,
    Corpus,
    _segments,
    all_files,
    corpus,  # noqa: F401 - a fixture
    flip,
    header_of,
    key_cases,
    manifest_edits,
    modified,
    symlinked_package,
    truncation_points,
)

fcntl = pytest.importorskip("fcntl", reason="the C++ reader and its tests are POSIX-only")
resource = pytest.importorskip("resource", reason="the C++ reader and its tests are POSIX-only")

CPP = REPO / "cpp"
OV_DIR = Path(ov.__file__).parent
HEX64 = re.compile(r"([0-9a-f]{64})  (\S+)  (\d+) bytes")

# --- building the C++ project once --------------------------------------------------------------


@dataclass(frozen=True)
class Programs:
    dump: Path
    driver: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a C++ program: no ambient OVCRYPT_* variable, OpenVINO's libraries found."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OVCRYPT_")}
        libs = str(OV_DIR / "libs")
        path = f"{libs}:{clean['LD_LIBRARY_PATH']}" if clean.get("LD_LIBRARY_PATH") else libs
        return {**clean, "LD_LIBRARY_PATH": path, **extra}


def missing_toolchain() -> str | None:
    """Why the C++ project cannot be built here, or None."""
    if shutil.which("cmake") is None:
        return "cmake is not installed"
    compiler = next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)
    if compiler is None:
        return "no C++ compiler (c++, g++ or clang++) is installed"
    for header, package in (("openssl/evp.h", "libssl-dev"), ("nlohmann/json.hpp", "nlohmann-json3-dev")):
        probe = subprocess.run([compiler, "-std=c++17", "-fsyntax-only", "-x", "c++", "-"],
                               input=f"#include <{header}>\n", capture_output=True, text=True, check=False)  # fmt: skip
        if probe.returncode:
            return f"the header <{header}> is missing (Debian package {package})"
    if not (OV_DIR / "cmake" / "OpenVINOConfig.cmake").is_file():
        return f"the openvino wheel has no C++ package ({OV_DIR / 'cmake'})"
    return None


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock across pytest-xdist workers, so that only one of them builds."""
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def programs(tmp_path_factory: pytest.TempPathFactory) -> Programs:
    problem = missing_toolchain()
    if problem:
        if os.environ.get("CI") == "true":  # .ci/run installs the toolchain: on CI a skip would hide a failure
            pytest.fail(f"cannot build the C++ reader on CI: {problem}")
        pytest.skip(f"C++ reader not built: {problem}")
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    build = shared / "cpp-build"
    found = Programs(build / "ovcrypt_dump", build / "ovcrypt_test_driver")
    with locked(shared / "cpp-build.lock"):
        if not (build / "built").exists():
            generator = ["-G", "Ninja"] if shutil.which("ninja") else []
            configure = ["cmake", "-S", str(CPP), "-B", str(build), *generator, "-DCMAKE_BUILD_TYPE=Release",
                         f"-DOpenVINO_DIR={OV_DIR / 'cmake'}", "-DOVCRYPT_BUILD_TESTS=ON"]  # fmt: skip
            compile_ = ["cmake", "--build", str(build), "--parallel", "2", "--target", "ovcrypt_dump",
                        "ovcrypt_test_driver"]  # fmt: skip
            for step in (configure, compile_):
                result = subprocess.run(step, capture_output=True, text=True, check=False)
                assert result.returncode == 0, f"{' '.join(step)} failed:\n{result.stdout[-5000:]}\n{result.stderr}"
            (build / "built").touch()
    return found


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def digests(self) -> dict[str, str]:
        """relpath -> SHA-256 printed by ovcrypt_dump."""
        return {m[2]: m[1] for m in HEX64.finditer(self.stdout)}


def dump(programs: Programs, folder: Path, model: str, *args: str, key: bytes | None = None,
         env: dict[str, str] | None = None, timeout: float = 120, max_heap: int | None = None) -> Run:  # fmt: skip
    """Run ovcrypt_dump; `timeout` fails a reader that blocks, `max_heap` (bytes, RLIMIT_DATA) one that would
    otherwise grow until the machine runs out of memory."""
    extra = {"OVCRYPT_KEY": key.hex()} if key is not None else {}
    limit = None if max_heap is None else lambda: resource.setrlimit(resource.RLIMIT_DATA, (max_heap, max_heap))
    result = subprocess.run([str(programs.dump), *args, str(folder), model], env=programs.env(**extra, **(env or {})),
                            capture_output=True, text=True, timeout=timeout, check=False, preexec_fn=limit)  # fmt: skip
    return Run(result.returncode, result.stdout, result.stderr)


def assert_refused_one_line(run: Run, kind: str) -> str:
    """ovcrypt_dump refused: exit 1, one line on stderr naming the error class; returns that line."""
    assert run.code == 1, f"exit {run.code}, expected 1:\n{run.stdout}\n{run.stderr}"
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"ovcrypt_dump: {kind}: "), lines[0]
    assert "compiled" not in run.stdout
    return lines[0]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the C++ reader against the Python runtime, case by case --------------------------------------


class Checker:
    """One ovcrypt_test_driver `check` process: one request line, one answer line, many tamper cases."""

    def __init__(self, programs: Programs, key: bytes) -> None:
        self._proc = subprocess.Popen([str(programs.driver), "check"], env=programs.env(OVCRYPT_KEY=key.hex()),
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
        self.count = 0

    def __call__(self, folder: Path, model: str) -> str:
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(f"{folder}\t{model}\n")
        stdin.flush()
        self.count += 1
        answer = stdout.readline().rstrip("\n")
        if not answer:  # a crash is never an answer
            raise AssertionError(f"the C++ driver died (exit {self._proc.wait(timeout=30)}) on {folder} {model}")
        return answer

    def close(self) -> None:
        if self._proc.stdin:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)


@pytest.fixture
def checker(programs: Programs, corpus: Corpus, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
            suite_count: Callable[[str, int], None]) -> Iterator[Checker]:  # fmt: skip
    monkeypatch.setenv("OVCRYPT_KEY", corpus.key.hex())  # for the Python oracle
    check = Checker(programs, corpus.key)
    yield check
    check.close()
    suite_count("C++ reader cases compared with the Python runtime", check.count)


def python_outcome(folder: Path, model: str) -> str:
    """The oracle: "OK" or the class name of what the Python runtime raises reading the model."""
    try:
        runtime_for(folder).read_model(model)
    except OvcryptError as error:
        return type(error).__name__
    return "OK"


def assert_same_outcome(check: Checker, folder: Path, model: str, what: str, *, refused: bool = True) -> str:
    """The C++ reader answers as the Python runtime does; a refusal leaves no plaintext in its buffer."""
    expected = python_outcome(folder, model)
    answer = check(folder, model)
    if refused:
        assert expected != "OK", f"{what}: the Python runtime accepted it"
    if expected == "OK":
        assert answer.startswith("OK "), f"{what}: the C++ reader refused what Python reads: {answer}"
        return answer
    status, kind, wiped, message = [*answer.split(" ", 3), "", "", ""][:4]
    assert status == "ERR", f"{what}: the C++ reader accepted what Python refuses ({expected})"
    assert kind == expected, f"{what}: C++ raised {kind}, Python {expected}: {message}"
    assert wiped != "NOT-WIPED", f"{what}: a failed decryption left bytes in its buffer"
    return message


# --- FORMAT.md's test vectors ---------------------------------------------------------------------


@pytest.mark.parametrize("label", ["two-segments", "empty"])
def test_format_test_vectors(programs: Programs, tmp_path: Path, label: str) -> None:
    doc = doc_vectors()[label]
    master = bytes.fromhex(doc["master_key"])
    if "file" in doc:
        data = bytes.fromhex(doc["file"])
    else:  # rebuilt from FORMAT.md alone by tests/test_format.py's independent writer
        plaintext = vector_plaintext(int(doc["plaintext_length"]))
        data = ind_encrypt(master, int(doc["role"]), doc["name"].encode(), int(doc["segment_size"]), plaintext)["file"]
    assert hashlib.sha256(data).hexdigest() == doc["file_sha256"]
    path = tmp_path / "vector.ovc"
    path.write_bytes(data)
    result = subprocess.run([str(programs.driver), "vector", str(path)], env=programs.env(OVCRYPT_KEY=master.hex()),
                            capture_output=True, text=True, check=True)  # fmt: skip
    derived = dict(line.split(" = ", 1) for line in result.stdout.splitlines())
    fields = ["role", "name", "segment_size", "plaintext_length", "plaintext_sha256", "key_id", "salt", "file_key",
              "header", "header_nonce", "header_tag", "segment_count", "file_size"]  # fmt: skip
    fields += [f"nonce_{i}" for i in range(int(doc["segment_count"]))]
    assert set(derived) == set(fields)
    for field in fields:
        assert derived[field] == doc[field], field


# --- products built by the hook: read exactly, compiled, same inference ------------------------------


def test_rendered_package_decrypts_exactly_and_compiles(programs: Programs, corpus: Corpus) -> None:  # noqa: F811
    for model, (_, width) in MODELS.items():
        run = dump(programs, corpus.folder, model, key=corpus.key)
        assert run.code == 0, run.stderr
        source = corpus.sources[model]
        expected = {p.name: sha256_file(p) for p in (source, source.with_suffix(".bin"))}
        assert run.digests == expected
        assert f"compiled {model} on CPU" in run.stdout
        assert re.search(rf"^input x f32 \[1,{width}\]$", run.stdout, re.M), run.stdout
        assert re.search(rf"^output \S+ f32 \[1,{width}\]$", run.stdout, re.M), run.stdout
        assert corpus.key.hex() not in run.stdout + run.stderr
    for threads in ("1", "3", "8"):  # 5 segments over 1 to 5 workers
        run = dump(programs, corpus.folder, "large", "--threads", threads, key=corpus.key)
        assert run.digests["large.bin"] == sha256_file(corpus.sources["large"].with_suffix(".bin")), threads


def test_installed_wheel_read_exactly(programs: Programs, tmp_path: Path) -> None:
    project = tmp_path / "project"
    models = project / "models"
    sources = {"small": make_ir(models / "small.xml", 64 << 10, seed=3),
               "medium": make_ir(models / "medium.xml", int(2.5 * (1 << 20)), seed=4, width=256)}  # fmt: skip
    write_product(project, {name: f"models/{name}.xml" for name in sources})
    key = os.urandom(32)
    build_wheel(project, {"OVCRYPT_KEY": key.hex()})
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                    str(only_wheel(project / "dist"))], check=True, capture_output=True)  # fmt: skip
    for model, xml in sources.items():
        run = dump(programs, site / "acme_vision" / "_ovcrypt", model, key=key)
        assert run.code == 0, run.stderr
        assert run.digests == {p.name: sha256_file(p) for p in (xml, xml.with_suffix(".bin"))}
        assert f"compiled {model} on CPU" in run.stdout


def test_inference_bit_identical_to_the_python_runtime(programs: Programs, corpus: Corpus, tmp_path: Path,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("OVCRYPT_KEY", corpus.key.hex())
    runtime = runtime_for(corpus.folder)
    for model, (_, width) in MODELS.items():
        for seed in (1, 2):
            inputs = sample_input(width, seed=seed)
            (tmp_path / "in.raw").write_bytes(inputs.tobytes())
            subprocess.run([str(programs.driver), "infer", str(corpus.folder), model, str(tmp_path / "in.raw"),
                            str(tmp_path / "out.raw")], env=programs.env(OVCRYPT_KEY=corpus.key.hex()),
                           check=True, timeout=120)  # fmt: skip
            expected = np.asarray(runtime.compile_model(model)(inputs)[0], dtype=np.float32)
            produced = np.frombuffer((tmp_path / "out.raw").read_bytes(), dtype=np.float32).reshape(expected.shape)
            assert produced.tobytes() == expected.tobytes(), (model, seed)
            assert np.abs(expected).sum() > 0  # a real output, not zeros


def test_compile_refuses_openvino_cache_dir(programs: Programs, corpus: Corpus, tmp_path: Path) -> None:  # noqa: F811
    """OpenVINO's model cache writes decrypted weights to disk in plaintext: refused in the config and on the core."""
    cache = tmp_path / "cache"
    result = subprocess.run([str(programs.driver), "unsafe-config", str(corpus.folder), "small", str(cache)],
                            env=programs.env(OVCRYPT_KEY=corpus.key.hex()), capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.split() == ["UnsafeConfigError", "UnsafeConfigError"]
    assert not cache.exists() or not any(cache.iterdir())


def test_plain_folder_from_the_encrypt_command(programs: Programs, corpus: Corpus, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "out"
    xml = corpus.sources["medium"]
    env = {**os.environ, "OVCRYPT_KEY": corpus.key.hex()}
    subprocess.run([sys.executable, "-m", "hatch_ovcrypt", "encrypt", str(xml), "--out", str(out)], env=env,
                   check=True, capture_output=True)  # fmt: skip
    run = dump(programs, out, "medium", key=corpus.key)
    assert run.code == 0, run.stderr
    assert "no manifest" in run.stdout
    assert run.digests == {p.name: sha256_file(p) for p in (xml, xml.with_suffix(".bin"))}
    # still authenticated, and still bound to the model name and role by each header
    assert_refused_one_line(dump(programs, out, "medium", key=os.urandom(32)), "WrongKeyError")
    shutil.copyfile(encrypted_path(corpus.folder, "large", Role.BIN), out / "medium.bin.ovc")
    assert "holds the bin of model 'large'" in assert_refused_one_line(dump(programs, out, "medium", key=corpus.key),
                                                                       "IntegrityError")  # fmt: skip


# --- tampering: every kind in the Python tamper suite, refused alike -----------------------------------


def test_every_header_byte_flipped(checker: Checker, corpus: Corpus) -> None:  # noqa: F811
    for model, role in all_files():
        path = encrypted_path(corpus.folder, model, role)
        for offset in range(header_of(path).header_size):  # fixed header, model name and header tag
            for mask in (1 << (offset % 8), 0xFF):
                flip(path, offset, mask)
                try:
                    assert_same_outcome(checker, corpus.folder, model, f"{path.name} byte {offset} ^ {mask:#x}")
                finally:
                    flip(path, offset, mask)
    assert checker.count >= 2 * 6 * (72 + 16)


def test_segment_and_tag_bytes_flipped(checker: Checker, corpus: Corpus) -> None:  # noqa: F811
    for model, role in all_files():
        path = encrypted_path(corpus.folder, model, role)
        header = header_of(path)
        for index in range(header.segment_count):
            start, end = header.segment_span(index)
            tag = header.tags_offset + index * TAG_SIZE
            positions = [header.header_size + p for p in sorted({start, (start + end) // 2, end - 1})]
            for offset in [*positions, tag, tag + TAG_SIZE - 1]:
                flip(path, offset, 0x10)
                try:
                    message = assert_same_outcome(checker, corpus.folder, model, f"{path.name} byte {offset}")
                    assert f"segment {index} of {header.segment_count} failed authentication" in message, message
                finally:
                    flip(path, offset, 0x10)


def test_truncated_and_extended(checker: Checker, corpus: Corpus) -> None:  # noqa: F811
    for model, role in all_files():
        path = encrypted_path(corpus.folder, model, role)
        original = path.read_bytes()
        header = header_of(path)
        for length in truncation_points(header):
            with modified(path, original[:length]):
                assert_same_outcome(checker, corpus.folder, model, f"{path.name} cut to {length} bytes")
        for extra in (b"\x00", original[-TAG_SIZE:], os.urandom(1 << 20)):
            with modified(path, original + extra):
                message = assert_same_outcome(checker, corpus.folder, model, f"{path.name} + {len(extra)} bytes")
                assert "after the end" in message


@pytest.mark.parametrize("model", ["medium", "large"])
def test_segments_swapped_duplicated_dropped(checker: Checker, corpus: Corpus, model: str) -> None:  # noqa: F811
    path = encrypted_path(corpus.folder, model, Role.BIN)
    original = path.read_bytes()
    head, body, tags = _segments(original, header_of(path))
    count = len(body)

    def assemble(order: list[int], *, move_tags: bool = True) -> bytes:
        return head + b"".join(body[i] for i in order) + b"".join(tags[i] if move_tags else tags[n]
                                                                  for n, i in enumerate(order))  # fmt: skip

    for what, data in {
        "segments 0 and 1 swapped": assemble([1, 0, *range(2, count)]),
        "segments 0 and 1 swapped, tags left": assemble([1, 0, *range(2, count)], move_tags=False),
        "segment 0 duplicated over segment 1": assemble([0, 0, *range(2, count)]),
        "segment 1 dropped": assemble([0, *range(2, count)]),
        "last segment dropped": assemble(list(range(count - 1))),
        "first segment repeated at the end": assemble([*range(count), 0]),
    }.items():
        with modified(path, data):
            assert_same_outcome(checker, corpus.folder, model, what)


def test_files_swapped_and_from_other_builds(checker: Checker, corpus: Corpus) -> None:  # noqa: F811
    folder = corpus.folder
    swaps = [(("medium", Role.BIN), ("large", Role.BIN)), (("small", Role.XML), ("medium", Role.XML)),
             (("medium", Role.XML), ("medium", Role.BIN)), (("small", Role.BIN), ("large", Role.XML))]  # fmt: skip
    for (model, role), (source_model, source_role) in swaps:
        replacement = encrypted_path(folder, source_model, source_role).read_bytes()
        with modified(encrypted_path(folder, model, role), replacement):
            message = assert_same_outcome(checker, folder, model, f"{model} {role.label} <- {source_model}")
            assert f"of model '{source_model}'" in message
    xml, bin_ = encrypted_path(folder, "medium", Role.XML), encrypted_path(folder, "medium", Role.BIN)
    with modified(xml, bin_.read_bytes()), modified(bin_, xml.read_bytes()):
        assert_same_outcome(checker, folder, "medium", "xml and bin exchanged")
    for other in (corpus.other_key_folder, corpus.same_key_folder):
        for model, role in all_files():
            with modified(encrypted_path(folder, model, role), encrypted_path(other, model, role).read_bytes()):
                message = assert_same_outcome(checker, folder, model, f"{model} {role.label} from {other.parent.name}")
                assert "another build" in message or "failed authentication" in message, message


def test_manifest_edited_truncated_or_missing(checker: Checker, corpus: Corpus, tmp_path: Path,  # noqa: F811
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("OTHER_KEY", corpus.key.hex())  # "key variable renamed" must not make the MAC pass
    manifest = corpus.folder / MANIFEST_NAME
    original = manifest.read_bytes()
    variants = manifest_edits(json.loads(original), os.urandom(16).hex())
    variants |= {f"truncated to {n} bytes": original[:n] for n in (0, 1, len(original) // 2, len(original) - 2)}
    for what, data in variants.items():
        with modified(manifest, data):
            for model in MODELS:
                assert_same_outcome(checker, corpus.folder, model, what, refused=what != "model removed")
    package = tmp_path / "_ovcrypt"
    shutil.copytree(corpus.folder, package)
    encrypted_path(package, "large", Role.BIN).unlink()
    assert "missing" in assert_same_outcome(checker, package, "large", "file missing")
    (package / MANIFEST_NAME).unlink()
    assert_same_outcome(checker, package, "small", "manifest missing")


@pytest.mark.parametrize("what", ["file", "models folder"])
def test_symlinks_refused(checker: Checker, corpus: Corpus, tmp_path: Path, what: str) -> None:  # noqa: F811
    package = symlinked_package(corpus.folder, tmp_path, what)
    assert "symbolic link" in assert_same_outcome(checker, package, "medium", what)


# --- ovcrypt_dump refuses with exit 1 and one line ---------------------------------------------------

Damage = Callable[[Path], None]


def _flip_at(role: Role, where: Callable[[Path], int]) -> Damage:
    return lambda folder: flip(encrypted_path(folder, "medium", role), where(encrypted_path(folder, "medium", role)), 4)


def _truncate(folder: Path) -> None:
    path = encrypted_path(folder, "medium", Role.BIN)
    path.write_bytes(path.read_bytes()[: header_of(path).header_size + (1 << 20)])


def _swap_roles(folder: Path) -> None:
    xml, bin_ = encrypted_path(folder, "medium", Role.XML), encrypted_path(folder, "medium", Role.BIN)
    data = xml.read_bytes()
    xml.write_bytes(bin_.read_bytes())
    bin_.write_bytes(data)


def _edit_manifest(folder: Path) -> None:
    manifest = folder / MANIFEST_NAME
    manifest.write_text(manifest.read_text().replace('"generator": "hatch-ovcrypt', '"generator": "evil'))


DUMP_CASES: dict[str, tuple[Damage, str]] = {
    "header byte flipped": (_flip_at(Role.BIN, lambda p: 20), "IntegrityError"),
    "magic flipped": (_flip_at(Role.XML, lambda p: 0), "FormatError"),
    "segment byte flipped": (_flip_at(Role.BIN, lambda p: header_of(p).header_size + (1 << 20) + 12345),
                             "IntegrityError"),
    "tag byte flipped": (_flip_at(Role.BIN, lambda p: header_of(p).tags_offset + 3), "IntegrityError"),
    "truncated": (_truncate, "IntegrityError"),
    "xml and bin swapped": (_swap_roles, "IntegrityError"),
    "manifest edited": (_edit_manifest, "ManifestError"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DUMP_CASES))
def test_dump_refuses_tampering_with_one_line(programs: Programs, corpus: Corpus, tmp_path: Path,  # noqa: F811
                                              case: str) -> None:  # fmt: skip
    folder = tmp_path / "_ovcrypt"
    shutil.copytree(corpus.folder, folder)
    damage, kind = DUMP_CASES[case]
    damage(folder)
    line = assert_refused_one_line(dump(programs, folder, "medium", key=corpus.key), kind)
    assert MANIFEST_NAME in line if kind == "ManifestError" else "'medium'" in line
    assert corpus.key.hex() not in line


def test_dump_refuses_bad_wrong_and_missing_keys(programs: Programs, corpus: Corpus, tmp_path: Path,  # noqa: F811
                                                 suite_count: Callable[[str, int], None]) -> None:  # fmt: skip
    cases = key_cases(corpus.key)
    for what, (value, kind) in cases.items():
        env = {} if value is None else {"OVCRYPT_KEY": value}
        line = assert_refused_one_line(dump(programs, corpus.folder, "large", env=env), kind.__name__)
        assert corpus.key.hex() not in line.lower(), what
        assert value is None or not value.strip() or value.strip() not in line, (what, line)
        assert kind.__name__ == "WrongKeyError" or "OVCRYPT_KEY" in line, (what, line)
    files: dict[str, tuple[bytes | None, str]] = {
        "missing file": (None, "KeyMissingError"),
        "empty file": (b"", "KeyFormatError"),
        "binary garbage": (os.urandom(40), "KeyFormatError"),
        "wrong key": (os.urandom(32).hex().encode(), "WrongKeyError"),
    }
    for what, (content, kind_name) in files.items():
        path = tmp_path / f"{what.replace(' ', '-')}.key"
        if content is not None:
            path.write_bytes(content)
        assert_refused_one_line(dump(programs, corpus.folder, "small", env={"OVCRYPT_KEY_FILE": str(path)}), kind_name)
    suite_count("C++ key cases tried", len(cases) + len(files))


def test_dump_takes_keys_as_the_python_runtime_does(programs: Programs, corpus: Corpus, tmp_path: Path) -> None:  # noqa: F811
    good = corpus.key.hex()
    key_file = tmp_path / "key"
    key_file.write_text(f"{os.urandom(32).hex()}\n{good.upper()}\n")
    for env in ({"OVCRYPT_KEY": f"{os.urandom(32).hex()}, {good}"},  # rotation: a list, any order
                {"OVCRYPT_KEY_FILE": str(key_file)},
                {"OVCRYPT_KEY": os.urandom(32).hex(), "OVCRYPT_KEY_FILE": str(key_file)}):  # fmt: skip
        assert dump(programs, corpus.folder, "small", env=env).code == 0, env
    assert dump(programs, corpus.folder, "small", "--key-env", "PRODUCT_KEY", env={"PRODUCT_KEY": good}).code == 0
    # the manifest's key_env (v1) is never acted on: only the caller names the variable
    run = dump(programs, corpus.folder, "small", "--key-env", "PRODUCT_KEY", env={"OVCRYPT_KEY": good})
    assert_refused_one_line(run, "KeyMissingError")
    unknown = dump(programs, corpus.folder, "nothing", key=corpus.key)
    assert unknown.stderr.startswith("ovcrypt_dump: ModelNotFoundError")
    assert dump(programs, corpus.folder, "small", "--bogus").code == 2


# --- what is not a regular file, and key files without end: refused at once, as by the Python runtime ---

REFUSE_WITHIN = 30  # seconds: a reader that blocks fails the test instead of hanging it


def _package_file_is_fifo(folder: Path) -> None:
    path = encrypted_path(folder, "medium", Role.BIN)
    path.unlink()
    os.mkfifo(path)


def _manifest_is_fifo(folder: Path) -> None:
    (folder / MANIFEST_NAME).unlink()
    os.mkfifo(folder / MANIFEST_NAME)


@pytest.mark.parametrize("damage", [_package_file_is_fifo, _manifest_is_fifo], ids=["model file", "manifest"])
def test_fifo_in_a_package_refused_at_once(programs: Programs, corpus: Corpus, tmp_path: Path,  # noqa: F811
                                           monkeypatch: pytest.MonkeyPatch, damage: Damage) -> None:  # fmt: skip
    """A FIFO in place of a package's file blocked a plain open() forever; the Python runtime refuses it."""
    monkeypatch.setenv("OVCRYPT_KEY", corpus.key.hex())
    folder = tmp_path / "_ovcrypt"
    shutil.copytree(corpus.folder, folder)
    damage(folder)
    expected = python_outcome(folder, "medium")
    assert expected in ("IntegrityError", "ManifestError")
    line = assert_refused_one_line(dump(programs, folder, "medium", key=corpus.key, timeout=REFUSE_WITHIN), expected)
    assert "regular file" in line or "missing" in line, line


def test_fifo_or_device_in_a_plain_folder_refused_at_once(programs: Programs, corpus: Corpus, tmp_path: Path) -> None:  # noqa: F811
    """A plain folder follows symbolic links: a FIFO, or a link to /dev/zero, is still never read."""
    folder = tmp_path / "plain"
    folder.mkdir()
    shutil.copyfile(encrypted_path(corpus.folder, "medium", Role.XML), folder / "medium.xml.ovc")
    os.mkfifo(folder / "medium.bin.ovc")
    for _ in range(2):
        run = dump(programs, folder, "medium", key=corpus.key, timeout=REFUSE_WITHIN)
        assert "not a regular file" in assert_refused_one_line(run, "IntegrityError")
        (folder / "medium.bin.ovc").unlink()
        (folder / "medium.bin.ovc").symlink_to("/dev/zero")


def test_key_file_bounded_as_in_the_python_runtime(programs: Programs, corpus: Corpus, tmp_path: Path,  # noqa: F811
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """OVCRYPT_KEY_FILE=/dev/zero ended in std::bad_alloc; both readers take at most MAX_KEY_FILE_BYTES."""
    at_limit, over = tmp_path / "at-limit.key", tmp_path / "over.key"
    at_limit.write_text(corpus.key.hex().ljust(MAX_KEY_FILE_BYTES))  # the key, then spaces
    over.write_text(corpus.key.hex().ljust(MAX_KEY_FILE_BYTES + 1))
    for path, expected in ((at_limit, "OK"), (over, "KeyFormatError"), (Path("/dev/zero"), "KeyFormatError")):
        monkeypatch.delenv("OVCRYPT_KEY", raising=False)
        monkeypatch.setenv("OVCRYPT_KEY_FILE", str(path))
        assert python_outcome(corpus.folder, "small") == expected, path
        run = dump(programs, corpus.folder, "small", env={"OVCRYPT_KEY_FILE": str(path)}, timeout=REFUSE_WITHIN,
                   max_heap=2 << 30)  # fmt: skip
        if expected == "OK":
            assert run.code == 0, run.stderr
            continue
        line = assert_refused_one_line(run, expected)
        assert f"key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes" in line, line


# --- the manifest's canonical JSON, and manifest v2 folder models -----------------------------------


Json = dict[str, Any]


def mac_of(key: bytes, body: Json) -> str:
    """FORMAT.md section 5.2, with Python's json and an independent HKDF."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return hmac.new(ind_hkdf(key, None, b"hatch-ovcrypt/v1/manifest-mac"), canonical, hashlib.sha256).hexdigest()


def signed_manifest(key: bytes, body: Json) -> bytes:
    doc = {"_generated": "written by tests/test_cpp.py", **body, "mac": mac_of(key, body)}
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def test_canonical_json_with_escapes_matches_python(programs: Programs, corpus: Corpus, tmp_path: Path) -> None:  # noqa: F811
    package = tmp_path / "_ovcrypt"
    shutil.copytree(corpus.folder, package)
    doc = json.loads((package / MANIFEST_NAME).read_bytes())
    body = {k: v for k, v in doc.items() if k not in ("_generated", "mac")}
    body["generator"] = 'hatch-ovcrypt ünïcödé \u2603 \U0001f600 "quoted" \\ / \x7f \x01\t\n'
    (package / MANIFEST_NAME).write_bytes(signed_manifest(corpus.key, body))
    result = subprocess.run([str(programs.driver), "manifest", str(package)], env=programs.env(), capture_output=True,
                            text=True, check=True)  # fmt: skip
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert f"canonical {canonical}\n" in result.stdout
    assert dump(programs, package, "small", key=corpus.key).code == 0  # the MAC verifies in C++


def write_v2_package(root: Path, key: bytes, models: dict[str, tuple[str, dict[str, bytes]]]) -> Path:
    """A package with a "hatch-ovcrypt-manifest/2" manifest, written from the v2 design with the
    independent writer of tests/test_format.py, beside the packages the Python writer renders."""
    folder = root / "_ovcrypt"
    body_models: Json = {}
    for model, (kind, files) in models.items():
        entries = {}
        for relpath, plaintext in files.items():
            if kind == "ir":
                file, name = f"{model}.{relpath.rsplit('.', 1)[1]}.ovc", model
            else:
                file, name = f"{model}/{relpath}.ovc", f"{model}/{relpath}"
            role = 1 if relpath.endswith(".xml") else 2 if relpath.endswith(".bin") else 4
            sealed = ind_encrypt(key, role, name.encode(), 1 << 20, plaintext)
            path = folder / "models" / file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(sealed["file"])
            entries[relpath] = {"file": file, "size": len(sealed["file"]), "salt": sealed["salt"].hex(),
                                "sha256": hashlib.sha256(sealed["file"]).hexdigest()}  # fmt: skip
        body_models[model] = {"kind": kind, "files": entries}
    body = {"format": "hatch-ovcrypt-manifest/2", "generator": "tests/test_cpp.py",
            "key_id": ind_hkdf(key, None, b"hatch-ovcrypt/v1/key-id", 16).hex(), "models": body_models}  # fmt: skip
    (folder / MANIFEST_NAME).write_bytes(signed_manifest(key, body))
    return folder


V2Package = tuple[Path, bytes, dict[str, dict[str, bytes]]]  # folder, key, model -> relpath -> plaintext


@pytest.fixture(scope="module")
def v2_package(tmp_path_factory: pytest.TempPathFactory) -> V2Package:
    root = tmp_path_factory.mktemp("v2")
    ir = make_ir(root / "src" / "net.xml", 3 << 20, seed=7, width=256)
    tok = make_ir(root / "src" / "tok.xml", 4 << 10, seed=8)
    llm = {
        "openvino_model.xml": ir.read_bytes(),
        "openvino_model.bin": ir.with_suffix(".bin").read_bytes(),
        "openvino_tokenizer.xml": tok.read_bytes(),
        "openvino_tokenizer.bin": tok.with_suffix(".bin").read_bytes(),
        "tokenizer.json": json.dumps({"vocab": ["a", "b"]}).encode(),
        "unet/config.json": b"{}",
        "empty.txt": b"",
    }
    single = {"single.xml": tok.read_bytes(), "single.bin": tok.with_suffix(".bin").read_bytes()}
    key = os.urandom(32)
    folder = write_v2_package(root, key, {"chat": ("llm", llm), "single": ("ir", single)})
    return folder, key, {"chat": llm, "single": single}


def test_manifest_v2_folder_models(programs: Programs, v2_package: V2Package) -> None:
    folder, key, models = v2_package
    listing = subprocess.run([str(programs.driver), "manifest", str(folder)], env=programs.env(), capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    assert "model chat kind llm default openvino_model" in listing
    assert "part chat openvino_tokenizer openvino_tokenizer.xml openvino_tokenizer.bin" in listing
    assert "file chat unet/config.json chat/unet/config.json.ovc data chat/unet/config.json" in listing
    assert "model single kind ir default single" in listing
    for model, files in models.items():
        run = dump(programs, folder, model, key=key)
        assert run.code == 0, run.stderr
        assert run.digests == {relpath: hashlib.sha256(data).hexdigest() for relpath, data in files.items()}
        assert f"compiled {'openvino_model' if model == 'chat' else model} on CPU" in run.stdout
    result = subprocess.run([str(programs.dump), str(folder), "chat", "openvino_tokenizer"],
                            env=programs.env(OVCRYPT_KEY=key.hex()), capture_output=True, text=True, check=False)
    named = Run(result.returncode, result.stdout, result.stderr)
    assert named.code == 0 and "compiled openvino_tokenizer on CPU" in named.stdout, named.stderr


def test_manifest_v2_refusals(programs: Programs, v2_package: V2Package,
                              tmp_path: Path) -> None:  # fmt: skip
    source, key, _ = v2_package
    doc = json.loads((source / MANIFEST_NAME).read_bytes())
    body = {k: v for k, v in doc.items() if k not in ("_generated", "mac")}

    def variant(change: Callable[[Json], None], *, sign: bool = True) -> Path:
        folder = tmp_path / f"case{len(list(tmp_path.iterdir()))}" / "_ovcrypt"
        shutil.copytree(source, folder)
        edited = json.loads(json.dumps(body))
        change(edited)
        data = signed_manifest(key, edited) if sign else json.dumps({**doc, **edited}).encode()
        (folder / MANIFEST_NAME).write_bytes(data)
        return folder

    def files(d: Json) -> Json:
        return d["models"]["chat"]["files"]  # type: ignore[no-any-return]

    cases: dict[str, tuple[Callable[[Json], None], bool, str]] = {
        "unsigned edit": (lambda d: files(d)["tokenizer.json"].update(size=1), False, "ManifestError"),
        "file elsewhere": (lambda d: files(d)["tokenizer.json"].update(file="../x.ovc"), True, "ManifestError"),
        "relpath with ..": (lambda d: files(d).update({"../x": files(d)["tokenizer.json"]}), True, "ManifestError"),
        "unknown kind": (lambda d: d["models"]["chat"].update(kind="zip"), True, "ManifestError"),
        "salt of another file": (lambda d: files(d)["tokenizer.json"].update(salt=files(d)["empty.txt"]["salt"]), True,
                                 "IntegrityError"),
    }  # fmt: skip
    for what, (change, sign, kind) in cases.items():
        line = assert_refused_one_line(dump(programs, variant(change, sign=sign), "chat", key=key), kind)
        assert key.hex() not in line, what
    # a file moved under another relpath is bound to its own name by its header
    folder = variant(lambda d: None)
    moved = folder / "models" / "chat" / "tokenizer.json.ovc"
    moved.write_bytes((folder / "models" / "chat" / "unet" / "config.json.ovc").read_bytes())
    assert "of model 'chat/unet/config.json'" in assert_refused_one_line(dump(programs, folder, "chat", key=key),
                                                                         "IntegrityError")  # fmt: skip


def test_plain_folder_with_a_folder_model(programs: Programs, v2_package: V2Package,
                                          tmp_path: Path) -> None:  # fmt: skip
    """A plain folder is read like a package's models/ folder, without the manifest."""
    source, key, models = v2_package
    plain = tmp_path / "plain"
    shutil.copytree(source / "models", plain)
    for model, files in models.items():
        run = dump(programs, plain, model, key=key)
        assert run.code == 0, run.stderr
        assert "no manifest" in run.stdout
        assert run.digests == {relpath: hashlib.sha256(data).hexdigest() for relpath, data in files.items()}
