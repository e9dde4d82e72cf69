"""`hatch-ovcrypt` verbs on real models: exact flags, exit codes (0/1/2), one-line errors, no key material."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from hatch_ovcrypt.cli import main
from hatch_ovcrypt.cli.common import Keys
from hatch_ovcrypt.hook.writer import encrypt_file
from ovcrypt_runtime._format.spec import MIN_SEGMENT_SIZE, Role, key_id
from ovcrypt_runtime._format.writer import FileSource
from tests.helpers import encrypted_path, make_ir, render_folder, write_product

# Run on Linux, and on macOS and Windows as simulated (tests/platforms.py, issue 21).
pytestmark = pytest.mark.usefixtures("simulated_platform")

SCRIPT = Path(sys.executable).with_name("hatch-ovcrypt")


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Setup:
    root: Path
    xml: Path
    key_a: bytes
    key_b: bytes
    file_a: Path
    file_b: Path
    enc: Path  # DIR with det.xml.ovc / det.bin.ovc under key A

    def secrets(self) -> list[str]:
        return [k.hex() for k in (self.key_a, self.key_b)] + [k.hex().upper() for k in (self.key_a, self.key_b)]


Cli = Callable[..., Result]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*args: str | Path) -> Result:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def write_key(path: Path, key: bytes) -> Path:
    path.write_text(key.hex() + "\n")
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ir")
    make_ir(root / "det.xml", 256 << 10)
    return root


@pytest.fixture
def setup(tmp_path: Path, model_dir: Path, cli: Cli) -> Setup:
    models = tmp_path / "m"
    shutil.copytree(model_dir, models)
    key_a, key_b = secrets.token_bytes(32), secrets.token_bytes(32)
    s = Setup(
        tmp_path, models / "det.xml", key_a, key_b,
        write_key(tmp_path / "a.key", key_a), write_key(tmp_path / "b.key", key_b), tmp_path / "enc",
    )  # fmt: skip
    r = cli("encrypt", s.xml, "--out", s.enc, "--key-file", s.file_a)
    assert r.code == 0, r.err
    return s


def assert_one_line_error(r: Result, code: int, *needles: str) -> None:
    assert r.code == code, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) >= 1 and all(line.startswith("hatch-ovcrypt: error: ") for line in lines), r.err
    assert "Traceback" not in r.err
    for needle in needles:
        assert needle in r.err, (needle, r.err)


def assert_no_secrets(s: Setup, *results: Result) -> None:
    for r in results:
        for secret in s.secrets():
            assert secret not in r.out and secret not in r.err


# --- encrypt ----------------------------------------------------------------------------------


def test_encrypt_writes_exactly_what_the_hook_writes(setup: Setup, tmp_path: Path) -> None:
    hook = render_folder(tmp_path / "hook", {"det": setup.xml}, setup.key_a)
    for role in (Role.XML, Role.BIN):
        cli_file = setup.enc / f"det.{role.label}.ovc"
        assert cli_file.read_bytes() == encrypted_path(hook, "det", role).read_bytes()


def test_encrypt_name_option_and_bad_names(setup: Setup, cli: Cli) -> None:
    bad = setup.root / "m" / "my-model.xml"
    shutil.copy(setup.xml, bad)
    shutil.copy(setup.xml.with_suffix(".bin"), bad.with_suffix(".bin"))
    assert_one_line_error(cli("encrypt", bad, "--out", setup.root / "o", "--key-file", setup.file_a), 2, "--name")
    assert_one_line_error(
        cli("encrypt", bad, "--out", setup.root / "o", "--name", "1x", "--key-file", setup.file_a), 2, "--name"
    )
    r = cli("encrypt", bad, "--out", setup.root / "o", "--name", "renamed", "--key-file", setup.file_a)
    assert r.code == 0, r.err
    assert sorted(p.name for p in (setup.root / "o").iterdir()) == ["renamed.bin.ovc", "renamed.xml.ovc"]


def test_encrypt_refuses_missing_bin_and_non_ir(setup: Setup, cli: Cli) -> None:
    lonely = setup.root / "lonely.xml"
    shutil.copy(setup.xml, lonely)
    assert_one_line_error(
        cli("encrypt", lonely, "--out", setup.root / "o", "--key-file", setup.file_a), 1, "lonely.bin"
    )
    junk = setup.root / "junk.xml"
    junk.write_bytes(os.urandom(100))
    junk.with_suffix(".bin").write_bytes(b"")
    assert_one_line_error(cli("encrypt", junk, "--out", setup.root / "o", "--key-file", setup.file_a), 1, "IR")
    assert not (setup.root / "o").exists()


# --- inspect ----------------------------------------------------------------------------------


def test_inspect_needs_no_key_and_imports_no_openvino(setup: Setup) -> None:
    code = (
        "import sys; from hatch_ovcrypt.cli import main; rc = main(sys.argv[1:]); "
        "assert 'openvino' not in sys.modules, 'inspect imported openvino'; sys.exit(rc)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "inspect", str(setup.enc)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr
    kid = key_id(setup.key_a).hex()
    for field in ("format version  1", "role            xml", "role            bin", "model name      det",
                  f"key id          {kid}", "segment size    1,048,576", "segments        1",
                  "plaintext size", "file size"):  # fmt: skip
        assert field in r.stdout, (field, r.stdout)
    assert str(setup.enc / "det.bin.ovc") in r.stdout
    assert_no_secrets(setup, Result(r.returncode, r.stdout, r.stderr))


def test_inspect_reports_bad_files_and_truncation(setup: Setup, cli: Cli) -> None:
    plain = setup.root / "plain.ovc"
    plain.write_bytes(b"not encrypted at all, longer than a header would be " * 4)
    truncated = setup.root / "t.ovc"
    truncated.write_bytes((setup.enc / "det.bin.ovc").read_bytes()[:-5])
    r = cli("inspect", plain, truncated, setup.enc / "det.xml.ovc")
    assert r.code == 1
    assert "plain.ovc: not a hatch-ovcrypt file" in r.err
    assert "truncated or extended" in r.out
    assert "role            xml" in r.out  # the good file is still shown


# --- verify -----------------------------------------------------------------------------------


def test_verify_good_tampered_and_wrong_key(setup: Setup, cli: Cli) -> None:
    r = cli("verify", setup.enc, "--key-file", setup.file_a)
    assert r.code == 0 and r.out.count("ok: ") == 2, r
    bad = setup.enc / "det.bin.ovc"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 1
    bad.write_bytes(bytes(data))
    r = cli("verify", setup.enc, "--key-file", setup.file_a)
    assert r.code == 1
    assert f"{bad}: segment 0 of 1 failed authentication" in r.err
    assert f"ok: {setup.enc / 'det.xml.ovc'}" in r.out
    r = cli("verify", setup.enc / "det.xml.ovc", "--key-file", setup.file_b)
    assert_one_line_error(r, 1, key_id(setup.key_a).hex(), key_id(setup.key_b).hex())
    assert_no_secrets(setup, r)


def test_verify_streams_many_segments_and_catches_truncation(tmp_path: Path, cli: Cli) -> None:
    key = secrets.token_bytes(32)
    key_file = write_key(tmp_path / "k", key)
    raw = tmp_path / "weights"
    raw.write_bytes(os.urandom(3 * MIN_SEGMENT_SIZE + 999))
    enc = tmp_path / "e" / "w.bin.ovc"
    encrypt_file(key, FileSource(raw), enc, name="w", role=Role.BIN)
    r = cli("verify", enc, "--key-file", key_file)
    assert r.code == 0 and "4 segment(s)" in r.out
    enc.write_bytes(enc.read_bytes()[: -16 * 4 - 10] + enc.read_bytes()[-16 * 4 :])
    assert_one_line_error(cli("verify", enc, "--key-file", key_file), 1, "truncated")


def test_progress_only_on_a_terminal(tmp_path: Path) -> None:
    pty = pytest.importorskip("pty", reason="needs pseudo-terminals (pty), which Windows' Python has not")
    key_file = write_key(tmp_path / "k", secrets.token_bytes(32))
    raw = tmp_path / "big"
    with raw.open("wb") as f:
        f.truncate(64 << 20)  # progress starts at 64 MiB
    encrypt_file(
        bytes.fromhex(key_file.read_text()), FileSource(raw), tmp_path / "big.bin.ovc", name="big", role=Role.BIN
    )
    cmd = [sys.executable, "-m", "hatch_ovcrypt", "verify", str(tmp_path / "big.bin.ovc"), "--key-file", str(key_file)]
    piped = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert piped.returncode == 0 and "%" not in piped.stderr
    controller, terminal = pty.openpty()
    try:
        tty = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=terminal, text=True, check=False)
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    assert tty.returncode == 0
    assert b"100%" in shown and b"verifying big.bin.ovc" in shown


# --- decrypt ----------------------------------------------------------------------------------


def test_decrypt_exports_and_refuses_to_overwrite(setup: Setup, cli: Cli) -> None:
    out = setup.root / "plain"
    r = cli("decrypt", setup.enc, "--out", out, "--key-file", setup.file_a)
    assert r.code == 0, r.err
    assert (out / "det.xml").read_bytes() == setup.xml.read_bytes()
    assert (out / "det.bin").read_bytes() == setup.xml.with_suffix(".bin").read_bytes()
    assert (out / "det.bin").stat().st_mode & 0o077 == 0  # plaintext is private to its owner
    (out / "det.xml").write_bytes(b"keep me")
    (out / "det.bin").unlink()
    r = cli("decrypt", setup.enc, "--out", out, "--key-file", setup.file_a)
    assert_one_line_error(r, 2, "refusing to overwrite")
    assert (out / "det.xml").read_bytes() == b"keep me" and not (out / "det.bin").exists()  # nothing written


def test_decrypt_wrong_key_and_tampered_write_nothing(setup: Setup, cli: Cli) -> None:
    out = setup.root / "plain"
    assert cli("decrypt", setup.enc, "--out", out, "--key-file", setup.file_b).code == 1
    data = bytearray((setup.enc / "det.bin.ovc").read_bytes())
    data[-1] ^= 1
    (setup.enc / "det.bin.ovc").write_bytes(bytes(data))
    assert cli("decrypt", setup.enc / "det.bin.ovc", "--out", out, "--key-file", setup.file_a).code == 1
    assert not out.exists() or not list(out.iterdir())


# --- rekey ------------------------------------------------------------------------------------


def test_rekey_keeps_name_role_segment_size_and_is_rerunnable(setup: Setup, cli: Cli) -> None:
    before = cli("inspect", setup.enc).out
    r = cli("rekey", setup.enc, "--new-key-file", setup.file_b, "--key-file", setup.file_a)
    assert r.code == 0, r.err
    after = cli("inspect", setup.enc).out
    kid_a, kid_b = key_id(setup.key_a).hex(), key_id(setup.key_b).hex()
    assert after == before.replace(kid_a, kid_b)
    assert cli("verify", setup.enc, "--key-file", setup.file_b).code == 0
    direct = setup.root / "direct"
    assert cli("encrypt", setup.xml, "--out", direct, "--key-file", setup.file_b).code == 0
    for name in ("det.xml.ovc", "det.bin.ovc"):  # the salt is derived from plaintext and key: same bytes
        assert (setup.enc / name).read_bytes() == (direct / name).read_bytes()
    again = cli("rekey", setup.enc, "--new-key-file", setup.file_b, "--key-file", setup.file_a)
    assert again.code == 0 and again.out.count("skipped") == 2
    out = setup.root / "plain"
    assert cli("decrypt", setup.enc, "--out", out, "--key-file", setup.file_b).code == 0
    assert (out / "det.bin").read_bytes() == setup.xml.with_suffix(".bin").read_bytes()
    assert_no_secrets(setup, r, again)


def test_rekey_failure_leaves_every_file_untouched(setup: Setup, cli: Cli) -> None:
    originals = {p: p.read_bytes() for p in setup.enc.iterdir()}
    r = cli("rekey", setup.enc, "--new-key-file", setup.file_b, "--key-file", setup.file_b)  # old key is wrong
    assert_one_line_error(r, 1, "needs key id")
    assert {p: p.read_bytes() for p in setup.enc.iterdir()} == originals
    bin_file = setup.enc / "det.bin.ovc"
    tampered = bytearray(originals[bin_file])
    tampered[-20] ^= 1
    bin_file.write_bytes(bytes(tampered))
    r = cli("rekey", bin_file, "--new-key-file", setup.file_b, "--key-file", setup.file_a)
    assert_one_line_error(r, 1, "failed authentication")
    assert bin_file.read_bytes() == bytes(tampered)
    assert sorted(p.name for p in setup.enc.iterdir()) == ["det.bin.ovc", "det.xml.ovc"]  # no temporary left


def test_rekey_needs_exactly_one_new_key(setup: Setup, cli: Cli) -> None:
    two = setup.root / "two.key"
    two.write_text(f"{setup.key_b.hex()},{setup.key_a.hex()}\n")
    r = cli("rekey", setup.enc, "--new-key-file", two, "--key-file", setup.file_a)
    assert_one_line_error(r, 2, "exactly one key")
    assert_no_secrets(setup, r)


# --- compile ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "ovc"])
def test_compile_prints_ports_and_time(setup: Setup, cli: Cli, kind: str) -> None:
    model = setup.xml if kind == "plain" else setup.enc / "det.xml.ovc"
    r = cli("compile", model, "--device", "CPU", "--key-file", setup.file_a)
    assert r.code == 0, r.err
    assert "input   x" in r.out and "output" in r.out and "f32" in r.out and "[1,64]" in r.out
    assert "took" in r.out and " s " in r.out


def test_compile_refusals(setup: Setup, cli: Cli) -> None:
    assert_one_line_error(cli("compile", setup.enc / "det.bin.ovc", "--key-file", setup.file_a), 2, "det.xml.ovc")
    assert_one_line_error(cli("compile", setup.enc / "det.xml.ovc", "--key-file", setup.file_b), 1, "key id")
    assert_one_line_error(cli("compile", setup.xml, "--device", "NO_SUCH_DEVICE"), 1, "NO_SUCH_DEVICE")
    assert "Exception from" not in cli("compile", setup.xml, "--device", "NO_SUCH_DEVICE").err
    (setup.enc / "det.bin.ovc").unlink()
    assert_one_line_error(cli("compile", setup.enc / "det.xml.ovc", "--key-file", setup.file_a), 1, "missing")


def test_compile_output_matches_plain_inference(setup: Setup) -> None:
    """What `compile` loads from DIR/<name>.xml.ovc is the model itself, bit for bit."""
    import openvino as ov

    from hatch_ovcrypt.cli.common import load_keys
    from ovcrypt_runtime._loading.loader import decrypt_file, model_from_memory
    from tests.helpers import reference_output, sample_input

    keys = load_keys(str(setup.file_a), "OVCRYPT_KEY")
    core = ov.Core()
    with (setup.enc / "det.xml.ovc").open("rb") as f:
        xml = decrypt_file(f, "x", keys.key_for, name="det", role=Role.XML)
    with (setup.enc / "det.bin.ovc").open("rb") as f:
        weights = decrypt_file(f, "b", keys.key_for, name="det", role=Role.BIN)
    out = core.compile_model(model_from_memory(core, xml, weights), "CPU")(sample_input())[0]
    assert np.array_equal(out, reference_output(setup.xml, sample_input()))


# --- keys and usage ---------------------------------------------------------------------------


def test_keys_from_environment_variables(setup: Setup, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVCRYPT_KEY", f"{setup.key_b.hex()},{setup.key_a.hex()}")  # several keys: any one fits
    assert cli("verify", setup.enc).code == 0
    monkeypatch.delenv("OVCRYPT_KEY")
    monkeypatch.setenv("ACME_KEY_FILE", str(setup.file_a))
    assert cli("verify", setup.enc, "--key-env", "ACME_KEY").code == 0
    monkeypatch.setenv("ACME_KEY", setup.key_b.hex())
    r = cli("verify", setup.enc, "--key-env", "ACME_KEY")
    assert r.code == 0  # $ACME_KEY and $ACME_KEY_FILE are both offered
    monkeypatch.setenv("ACME_KEY", "zz" * 32)
    assert_one_line_error(cli("verify", setup.enc, "--key-env", "ACME_KEY"), 2, "ACME_KEY", "hex")
    assert_one_line_error(cli("verify", setup.enc, "--key-env", "not-a-name"), 2, "--key-env")


def test_usage_errors_are_one_line_exit_2(setup: Setup, cli: Cli) -> None:
    assert_one_line_error(cli("verify", setup.enc), 2, "no key", "--key-file", "OVCRYPT_KEY")
    assert_one_line_error(cli("verify", setup.root / "missing", "--key-file", setup.file_a), 2, "does not exist")
    empty = setup.root / "empty"
    empty.mkdir()
    assert_one_line_error(cli("inspect", empty), 2, "no encrypted files")
    assert_one_line_error(cli("verify", setup.enc, "--key-file", setup.root / "nokey"), 2, "no such file")
    bad = setup.root / "bad.key"
    bad.write_text("not a key\n")
    assert_one_line_error(cli("verify", setup.enc, "--key-file", bad), 2, "not a key")
    assert cli("encrypt", setup.xml).code == 2  # argparse: --out is required
    assert cli("frobnicate").code == 2
    assert cli("compile", setup.xml, "--openssl-key-hex-file", setup.file_a).code == 2


@pytest.mark.parametrize(
    "args",
    [
        ["--key", "{a}"],
        ["--key={a}"],
        ["--new-key", "{a}"],
        ["{a}"],
        ["--key-file", "{a}"],
        ["--new-key-file={a}"],
    ],
)
def test_a_key_is_never_taken_as_an_argument(setup: Setup, cli: Cli, args: list[str]) -> None:
    argv = [a.format(a=setup.key_a.hex()) for a in args]
    verb = ["rekey", str(setup.enc)] if "new-key" in args[0] else ["verify", str(setup.enc)]
    if verb[0] == "rekey":
        verb += ["--key-file", str(setup.file_a)]
    r = cli(*verb, *argv)
    assert_one_line_error(r, 2, "never taken as arguments")
    assert_no_secrets(setup, r)


def test_no_key_material_in_any_output_or_repr(setup: Setup, cli: Cli) -> None:
    results = [
        cli("inspect", setup.enc),
        cli("verify", setup.enc, "--key-file", setup.file_a),
        cli("verify", setup.enc, "--key-file", setup.file_b),
        cli("compile", setup.enc / "det.xml.ovc", "--key-file", setup.file_b),
        cli("decrypt", setup.enc, "--out", setup.root / "p", "--key-file", setup.file_a),
        cli("rekey", setup.enc, "--new-key-file", setup.file_b, "--key-file", setup.file_a),
        cli("encrypt", setup.xml, "--out", setup.root / "e2", "--key-file", setup.file_b),
    ]
    assert_no_secrets(setup, *results)
    keys = Keys([setup.key_a, setup.key_b], "--key-file x")
    assert_no_secrets(setup, Result(0, repr(keys), str(vars(keys))))
    with pytest.raises(Exception) as info:
        keys.key_for(b"\x00" * 16, "label")
    assert_no_secrets(setup, Result(0, str(info.value), repr(info.value)))


def test_console_script_and_python_m_agree(setup: Setup) -> None:
    assert SCRIPT.exists()
    via_script = subprocess.run([str(SCRIPT), "inspect", str(setup.enc)], capture_output=True, text=True, check=False)
    via_module = subprocess.run(
        [sys.executable, "-m", "hatch_ovcrypt", "inspect", str(setup.enc)], capture_output=True, text=True, check=False
    )
    assert via_script.returncode == via_module.returncode == 0
    assert via_script.stdout == via_module.stdout
    bad = subprocess.run([str(SCRIPT), "verify", str(setup.enc)], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


def test_verify_a_package_folder_checks_its_manifest(setup: Setup, cli: Cli) -> None:
    folder = render_folder(setup.root / "_ovcrypt", {"det": setup.xml}, setup.key_a)
    r = cli("verify", folder, "--key-file", setup.file_a)
    assert r.code == 0 and "manifest.json (signed under key id" in r.out and r.out.count("ok: ") == 3, r
    # A file swapped for another build's copy of itself: each file authenticates, the manifest does not agree.
    other = render_folder(setup.root / "other", {"det": setup.xml}, setup.key_a, segment_size=2 << 20)
    shutil.copy(encrypted_path(other, "det", Role.BIN), encrypted_path(folder, "det", Role.BIN))
    r = cli("verify", folder, "--key-file", setup.file_a)
    assert_one_line_error(r, 1, "det.bin.ovc is not the file it was signed with")
    manifest = folder / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"generator": "hatch-ovcrypt', '"generator": "edited'))
    assert_one_line_error(cli("verify", folder, "--key-file", setup.file_a), 1, "manifest.json failed authentication")


def test_verify_reports_every_problem_of_a_package(setup: Setup, cli: Cli) -> None:
    """Issue 18: a tampered file and a missing file both appear (the first problem used to hide the rest)."""
    folder = render_folder(setup.root / "_ovcrypt", {"det": setup.xml, "other": setup.xml}, setup.key_a)
    tampered, missing = encrypted_path(folder, "det", Role.BIN), encrypted_path(folder, "other", Role.XML)
    data = bytearray(tampered.read_bytes())
    data[-100] ^= 1
    tampered.write_bytes(bytes(data))
    missing.unlink()
    stray = folder / "models" / "det_old.bin.ovc"  # a valid encrypted file the manifest does not list
    stray.write_bytes(encrypted_path(folder, "other", Role.BIN).read_bytes())
    r = cli("verify", folder, "--key-file", setup.file_a)
    assert_one_line_error(r, 1, "det.bin.ovc is not the file it was signed with", "det.bin.ovc: segment",
                          "other.xml.ovc, which is missing", "det_old.bin.ovc is not in the manifest")  # fmt: skip
    stray.unlink()
    manifest = folder / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"generator": "hatch-ovcrypt', '"generator": "edited'))
    r = cli("verify", folder, "--key-file", setup.file_a)
    assert_one_line_error(r, 1, "manifest.json failed authentication", "det.bin.ovc is not the file it was signed",
                          "other.xml.ovc, which is missing", "4 check(s) failed")  # fmt: skip
    # rekey refuses with the first problem, and says how many more there are
    assert_one_line_error(cli("rekey", folder, "--new-key-file", setup.file_b, "--key-file", setup.file_a), 1,
                          "manifest.json failed authentication", "and 2 more problem(s)")  # fmt: skip


def test_leftover_temporary_files_reported_by_verify_and_removed_by_rekey(setup: Setup, cli: Cli) -> None:
    """What a killed rekey leaves (atomic_writer's `.<name>.<random>.tmp`, never renamed into place)."""
    folder = render_folder(setup.root / "_ovcrypt", {"det": setup.xml}, setup.key_a)
    leftovers = [folder / "models" / ".det.bin.ovc.k3x_9qa2.tmp", folder / ".manifest.json.a8zz01bq.tmp",
                 setup.enc / ".det.xml.ovc.0123abcd.tmp"]  # fmt: skip
    for path in leftovers:
        path.write_bytes(os.urandom(1000))
    unrelated = [folder / "models" / ".det.bin.ovc.notours.tmp", setup.enc / "notes.tmp"]
    for path in unrelated:
        path.write_text("kept")
    r = cli("verify", folder, setup.enc, "--key-file", setup.file_a)
    assert_one_line_error(r, 1, *(f"{p}: a temporary file left behind by an interrupted" for p in leftovers),
                          "3 check(s) failed")  # fmt: skip
    assert r.out.count("ok: ") == 5, r.out  # the manifest and four files are fine
    r = cli("rekey", folder, setup.enc, "--new-key-file", setup.file_b, "--key-file", setup.file_a)
    assert r.code == 0, r.err
    assert all(f"removed {p}" in r.out for p in leftovers) and not any(p.exists() for p in leftovers)
    assert all(p.read_text() == "kept" for p in unrelated)
    assert cli("verify", folder, setup.enc, "--key-file", setup.file_b).code == 0


def test_every_argument_has_help_text() -> None:
    """Issue 12: `hatch-ovcrypt VERB --help` explains every argument."""
    import argparse

    from hatch_ovcrypt.cli import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parsers = dict(verbs.choices)
    for name, sub in verbs.choices.items():  # `datakey ACTION`: the actions' arguments too
        for nested in (a for a in sub._actions if isinstance(a, argparse._SubParsersAction)):
            parsers.update({f"{name} {action}": parser for action, parser in nested.choices.items()})
    missing = [
        f"{name} {action.dest}"
        for name, sub in parsers.items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert len(verbs.choices) == 11 and len(parsers) == 16 and not missing, missing


def test_check_says_how_to_make_the_example_models(tmp_path: Path) -> None:
    """Issue 12: `check` in example_project/ (models not made yet) says how to make them."""
    from tests.helpers import REPO, run

    project = tmp_path / "acme-vision"
    shutil.copytree(REPO / "example_project", project, ignore=shutil.ignore_patterns("models", "dist"))
    result = run([sys.executable, "-m", "hatch_ovcrypt", "check", str(project)], check=False,
                 env={"OVCRYPT_KEY": "00" * 32})  # fmt: skip
    assert result.returncode == 1 and "this project makes its models with `python make_models.py`" in result.stderr


# --- check: texts --------------------------------------------------------------------------------


@pytest.fixture
def product(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A product checked with a key in $OVCRYPT_KEY, outside any uv project, and not run by uv."""
    project = write_product(tmp_path / "product", {"det": "models/det.xml"})
    shutil.copytree(model_dir, project / "models")
    monkeypatch.setenv("OVCRYPT_KEY", secrets.token_hex(32))
    monkeypatch.delenv("UV", raising=False)
    assert not [p for p in (project, *project.parents) if (p / "uv.lock").is_file()]
    return project


@pytest.mark.parametrize("uv", ["none", "UV set", "uv.lock", "uv.lock of a workspace", "[tool.uv]", "covered"])
def test_check_gives_uv_cache_keys_advice_only_where_uv_is_in_use(product: Path, cli: Cli, uv: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    pyproject = product / "pyproject.toml"
    if uv == "UV set":
        monkeypatch.setenv("UV", "/usr/local/bin/uv")
    elif uv == "uv.lock":
        (product / "uv.lock").write_text("version = 1\n")
    elif uv == "uv.lock of a workspace":
        (product.parent / "pyproject.toml").write_text('[tool.uv.workspace]\nmembers = ["product"]\n')
        (product.parent / "uv.lock").write_text("version = 1\n")
    elif uv == "[tool.uv]":
        pyproject.write_text(pyproject.read_text() + "\n[tool.uv]\npackage = true\n")
    elif uv == "covered":
        pyproject.write_text(pyproject.read_text() + '\n[tool.uv]\ncache-keys = ["pyproject.toml", "models/**"]\n')
    r = cli("check", product)
    assert r.code == 0, r.err
    advised = "cache-keys = [" in r.out
    assert advised == (uv not in ("none", "covered")), r.out
    assert "pip install -e" not in r.out  # pip builds anew each time: it needs no advice
    if advised:
        assert {"UV set": "$UV is set", "[tool.uv]": "[tool.uv] table"}.get(uv, "uv.lock") in r.out


def test_check_says_what_models_takes(product: Path, cli: Cli) -> None:
    pyproject = product / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('models = { det = "models/det.xml" }', ""))
    r = cli("check", product)
    assert r.code == 1 and "Traceback" not in r.err
    assert ".models` is required: a table of model name -> path (an IR .xml, a model folder, or a file" in r.err
