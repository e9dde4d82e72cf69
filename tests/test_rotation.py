"""Keys for real deployments: several keys at once, rotation with no failed load, and the key provider.

The rotation is the one the README describes: deploy the runtime with "A,B" (old first is fine,
lookup is by key id), rekey the files to B, then deploy with "B,A": old and new files both load.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hatch_ovcrypt.cli import main
from ovcrypt_runtime._errors import ManifestError, WrongKeyError
from ovcrypt_runtime._format.manifest import parse_manifest
from ovcrypt_runtime._format.spec import key_id
from tests.helpers import (
    build_wheel,
    make_ir,
    only_wheel,
    reference_output,
    render_folder,
    runtime_for,
    sample_input,
    unpack,
    write_product,
)
from tests.platforms import NEEDS_SIGKILL


def infer(folder: Path, monkeypatch: pytest.MonkeyPatch, keys: str | None, width: int = 64) -> np.ndarray:
    """A fresh runtime over `folder`, given $OVCRYPT_KEY = keys (or nothing), runs the model once."""
    if keys is None:
        monkeypatch.delenv("OVCRYPT_KEY", raising=False)
    else:
        monkeypatch.setenv("OVCRYPT_KEY", keys)
    return np.asarray(runtime_for(folder).compile_model("det")(sample_input(width))[0])


def secrets_in(text: str, *keys: bytes) -> list[str]:
    return [k.hex() for k in keys if k.hex() in text or k.hex().upper() in text]


@pytest.fixture(scope="module")
def ir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ir(tmp_path_factory.mktemp("ir") / "det.xml", 200 << 10, seed=5)


# --- several keys at run time -----------------------------------------------------------------


def test_several_keys_by_env_list_and_repeated_set_key(
    ir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c = (secrets.token_bytes(32) for _ in range(3))
    folder = render_folder(tmp_path / "_ovcrypt", {"det": ir}, a)
    expected = reference_output(ir, sample_input())
    for keys in (f"{a.hex()},{b.hex()}", f"{b.hex()},{a.hex()}", f"{c.hex()} {a.hex()}"):
        assert np.array_equal(infer(folder, monkeypatch, keys), expected)

    monkeypatch.delenv("OVCRYPT_KEY")
    runtime = runtime_for(folder)
    assert runtime.keyring.add(b) == key_id(b).hex()
    assert runtime.keyring.add(a.hex()) == key_id(a).hex()  # a second set_key adds, it does not replace
    assert np.array_equal(runtime.compile_model("det")(sample_input())[0], expected)

    with pytest.raises(WrongKeyError) as info:
        infer(folder, monkeypatch, f"{b.hex()},{c.hex()}")
    message = str(info.value)
    assert key_id(a).hex() in message and key_id(b).hex() in message and key_id(c).hex() in message
    assert not secrets_in(message + repr(info.value) + repr(runtime.keyring) + repr(runtime), a, b, c)


# --- rekey and the manifest -------------------------------------------------------------------


def test_rekey_refuses_an_edited_manifest(ir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = secrets.token_bytes(32), secrets.token_bytes(32)
    folder = render_folder(tmp_path / "_ovcrypt", {"det": ir}, a)
    manifest = folder / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"generator": "hatch-ovcrypt', '"generator": "edited'))
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    (tmp_path / "a").write_text(a.hex())
    (tmp_path / "b").write_text(b.hex())
    code = main(["rekey", str(folder), "--new-key-file", str(tmp_path / "b"), "--key-file", str(tmp_path / "a")])
    assert code == 1 and "manifest.json failed authentication" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_rekey_of_part_of_a_package_leaves_its_manifest(
    ir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = secrets.token_bytes(32), secrets.token_bytes(32)
    folder = render_folder(tmp_path / "_ovcrypt", {"det": ir}, a)
    manifest_before = (folder / "manifest.json").read_bytes()
    (tmp_path / "b").write_text(b.hex())
    monkeypatch.setenv("OVCRYPT_KEY", a.hex())
    assert main(["rekey", str(folder / "models" / "det.bin.ovc"), "--new-key-file", str(tmp_path / "b")]) == 0
    assert "rekey the whole folder" in capsys.readouterr().err
    assert (folder / "manifest.json").read_bytes() == manifest_before
    assert main(["rekey", str(folder), "--new-key-file", str(tmp_path / "b")]) == 0  # finishing the job re-signs
    manifest = parse_manifest((folder / "manifest.json").read_bytes())
    assert manifest.key_id == key_id(b).hex()
    monkeypatch.delenv("OVCRYPT_KEY")  # a re-run needs no old key: everything is under the new one already
    assert main(["rekey", str(folder), "--new-key-file", str(tmp_path / "b"), "--key-file", str(tmp_path / "b")]) == 0
    assert parse_manifest((folder / "manifest.json").read_bytes()) == manifest
    manifest.verify(b)
    with pytest.raises(ManifestError):
        manifest.verify(a)


@pytest.mark.slow
def test_key_rotation_with_no_failed_load(
    ir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Build v1 under A; runtime given "A,B" loads; rekey to B; runtime given "B,A" loads old and new."""
    a, b = secrets.token_bytes(32), secrets.token_bytes(32)
    project = write_product(tmp_path / "product", {"det": "models/det.xml"})
    shutil.copytree(ir.parent, project / "models")
    build_wheel(project, {"OVCRYPT_KEY": a.hex()})
    v1 = unpack(only_wheel(project / "dist"), tmp_path / "v1") / "acme_vision" / "_ovcrypt"
    expected = reference_output(ir, sample_input())
    a_then_b, b_then_a = f"{a.hex()},{b.hex()}", f"{b.hex()},{a.hex()}"

    # 1. The new key is deployed beside the old one before any file changes.
    assert np.array_equal(infer(v1, monkeypatch, a_then_b), expected)

    # 2. The files are rekeyed to B (a copy: v1 stays deployed meanwhile). The old key comes from $OVCRYPT_KEY.
    v2 = tmp_path / "v2" / "_ovcrypt"
    shutil.copytree(v1, v2)
    (tmp_path / "b.key").write_text(b.hex() + "\n")
    monkeypatch.setenv("OVCRYPT_KEY", a_then_b)
    assert main(["rekey", str(v2), "--new-key-file", str(tmp_path / "b.key")]) == 0
    out = capsys.readouterr()
    assert out.out.count("rekeyed ") == 2 and "re-signed" in out.out
    assert not secrets_in(out.out + out.err, a, b)
    assert main(["verify", str(v2), "--key-file", str(tmp_path / "b.key")]) == 0
    assert parse_manifest((v2 / "manifest.json").read_bytes()).key_id == key_id(b).hex()
    assert (v2 / "models" / "det.bin.ovc").stat().st_mode == (v1 / "models" / "det.bin.ovc").stat().st_mode

    # 3. With "B,A" both the old and the new files load, with bit-identical results.
    assert np.array_equal(infer(v1, monkeypatch, b_then_a), expected)
    assert np.array_equal(infer(v2, monkeypatch, b_then_a), expected)
    assert np.array_equal(infer(v2, monkeypatch, a_then_b), expected)

    # 4. Once A is retired, only the rekeyed files load; the old ones name both key ids.
    assert np.array_equal(infer(v2, monkeypatch, b.hex()), expected)
    with pytest.raises(WrongKeyError) as info:
        infer(v1, monkeypatch, b.hex())
    assert key_id(a).hex() in str(info.value) and key_id(b).hex() in str(info.value)
    assert not secrets_in(str(info.value), a, b)


# --- the key provider, end to end in an installed wheel ---------------------------------------

PROVIDER = """\
import os


def get_key(key_id):
    path = os.environ.get("ACME_KEY_PATH")
    return open(path).read().strip() if path else None
"""

RUN = """\
import sys
import numpy as np
import acme_vision
from acme_vision import _ovcrypt
x = np.random.default_rng(123).standard_normal((1, 64)).astype(np.float32)
if len(sys.argv) > 1:
    _ovcrypt.set_key_provider(lambda key_id: open(sys.argv[1]).read().strip())
try:
    print(acme_vision.compile_model("det")(x)[0].tobytes().hex())
except Exception as exc:
    print(f"ERROR {isinstance(exc, _ovcrypt.OvcryptError)} {type(exc).__name__}: {exc}")
"""


@pytest.fixture(scope="module")
def provider_site(ir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A product whose pyproject names `key-provider = "acme_vision.keys:get_key"`, built and pip-installed."""
    tmp = tmp_path_factory.mktemp("provider")
    key = secrets.token_bytes(32)
    project = write_product(
        tmp / "product", {"det": "models/det.xml"}, extra_hook_options='key-provider = "acme_vision.keys:get_key"'
    )
    shutil.copytree(ir.parent, project / "models")
    (project / "src" / "acme_vision" / "keys.py").write_text(PROVIDER)
    build_wheel(project, {"OVCRYPT_KEY": key.hex()})
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                    str(only_wheel(project / "dist"))], check=True, capture_output=True)  # fmt: skip
    (tmp / "key").write_text(key.hex())
    return site, key


def run_product(site: Path, *args: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OVCRYPT_", "ACME_"))}
    result = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, check=False,
                            env={**clean, "PYTHONPATH": str(site), **env})  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.slow
def test_key_provider_from_pyproject_supplies_the_key(ir: Path, provider_site: tuple[Path, bytes]) -> None:
    site, key = provider_site
    expected = reference_output(ir, sample_input()).tobytes().hex()
    key_file = site.parent / "key"
    assert run_product(site, ACME_KEY_PATH=str(key_file)) == expected  # no $OVCRYPT_KEY at all
    assert run_product(site, key_file.as_posix()) == expected  # set_key_provider at run time
    missing = run_product(site)
    assert missing.startswith("ERROR True KeyMissingError") and not secrets_in(missing, key)
    wrong = site.parent / "wrong"
    wrong.write_text(secrets.token_hex(32))
    refused = run_product(site, ACME_KEY_PATH=str(wrong))
    assert refused.startswith("ERROR True WrongKeyError") and key_id(key).hex() in refused


@pytest.mark.slow
def test_key_provider_import_failure_is_one_clear_line(provider_site: tuple[Path, bytes], tmp_path: Path) -> None:
    site, key = provider_site
    broken = tmp_path / "site"
    shutil.copytree(site, broken)
    (broken / "acme_vision" / "keys.py").unlink()
    assert run_product(broken, OVCRYPT_KEY=key.hex()) == run_product(site, OVCRYPT_KEY=key.hex())  # not needed
    result = run_product(broken)  # the provider is imported only when no other source has the key
    assert result.startswith("ERROR True "), result
    assert "acme_vision.keys:get_key" in result and "\n" not in result
    (broken / "acme_vision" / "keys.py").write_text("def other(key_id):\n    return None\n")
    result = run_product(broken)
    assert result.startswith("ERROR True ") and "get_key" in result, result


# --- a rekey killed mid-way -------------------------------------------------------------------


@NEEDS_SIGKILL
def test_rekey_killed_mid_way_is_reported_by_verify_and_finished_by_a_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL runs no cleanup: the temporary file being written stays. `verify` names it; a re-run removes it."""
    big = make_ir(tmp_path / "src" / "det.xml", 64 << 20, seed=7, width=1024)
    a, b = secrets.token_bytes(32), secrets.token_bytes(32)
    folder = render_folder(tmp_path / "_ovcrypt", {"det": big}, a)
    (tmp_path / "a").write_text(a.hex())
    (tmp_path / "b").write_text(b.hex())
    models = folder / "models"
    env = {**os.environ, "OVCRYPT_KEY": f"{a.hex()},{b.hex()}"}
    proc = subprocess.Popen([sys.executable, "-m", "hatch_ovcrypt", "rekey", str(folder), "--new-key-file",
                             str(tmp_path / "b")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not [p for p in models.glob(".det.bin.ovc.*.tmp") if p.stat().st_size > (1 << 20)]:
            assert proc.poll() is None, "the rekey ended before it could be killed mid-file; use a larger model"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    [leftover] = models.glob(".det.bin.ovc.*.tmp")
    assert proc.returncode == -signal.SIGKILL

    monkeypatch.setenv("OVCRYPT_KEY", f"{a.hex()},{b.hex()}")
    assert main(["verify", str(folder)]) == 1
    err = capsys.readouterr().err
    assert f"{leftover}: a temporary file left behind by an interrupted (killed) rekey" in err, err

    assert main(["rekey", str(folder), "--new-key-file", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert f"removed {leftover}" in out and "re-signed" in out, out
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    assert main(["verify", str(folder), "--key-file", str(tmp_path / "b")]) == 0, capsys.readouterr().err
    assert np.array_equal(infer(folder, monkeypatch, b.hex(), 1024), reference_output(big, sample_input(1024)))

