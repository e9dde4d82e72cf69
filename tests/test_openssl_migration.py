"""Migration from the OpenSSL recipe, against the real `openssl` binary: byte-identical verbs, and
recipe-encrypted models loaded in memory (load_openssl_model, `hatch-ovcrypt compile`) and built into
a real wheel, all giving bit-identical inference against the plain IR.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hatch_ovcrypt.cli import main
from ovcrypt_runtime._errors import IntegrityError, KeyFormatError
from ovcrypt_runtime._loading.openssl import OpenSSLSource, load_openssl_model, parse_hex16
from tests.helpers import (
    build_wheel,
    make_ir,
    only_wheel,
    reference_output,
    runtime_for,
    sample_input,
    unpack,
    write_product,
)

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
pytestmark = pytest.mark.skipif(not Path(OPENSSL).exists(), reason="needs the openssl binary")


def openssl_enc(
    src: Path, dst: Path, key: bytes, iv: bytes, *, decrypt: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """Exactly the recipe: `openssl enc [-d] -aes-128-cbc -in .. -out .. -K <hex> -iv <hex>`."""
    cmd = [OPENSSL, "enc", *(["-d"] if decrypt else []), "-aes-128-cbc", "-in", str(src), "-out", str(dst),
           "-K", key.hex(), "-iv", iv.hex()]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, check=False)


def hex_file(path: Path, value: bytes) -> Path:
    path.write_text(value.hex() + "\n")
    return path


def ours(verb: str, src: Path, dst: Path, key_file: Path, iv_file: Path) -> int:
    """`hatch-ovcrypt openssl-encrypt|openssl-decrypt IN OUT --key-hex-file F --iv-hex-file F`."""
    return main([f"openssl-{verb}", str(src), str(dst), "--key-hex-file", str(key_file), "--iv-hex-file", str(iv_file)])


@pytest.fixture
def key_iv(tmp_path: Path) -> tuple[bytes, bytes, Path, Path]:
    key, iv = secrets.token_bytes(16), secrets.token_bytes(16)
    return key, iv, hex_file(tmp_path / "key.hex", key), hex_file(tmp_path / "iv.hex", iv)


# --- byte identity of openssl-encrypt / openssl-decrypt ---------------------------------------


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 31, 32, 4096, (1 << 20) + 7, (1 << 20) + 16])
def test_openssl_verbs_are_byte_identical_to_the_binary(
    tmp_path: Path, key_iv: tuple[bytes, bytes, Path, Path], size: int
) -> None:
    key, iv, key_file, iv_file = key_iv
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(size))
    mine, theirs = tmp_path / "mine.enc", tmp_path / "theirs.enc"
    assert ours("encrypt", plain, mine, key_file, iv_file) == 0
    assert openssl_enc(plain, theirs, key, iv).returncode == 0
    assert mine.read_bytes() == theirs.read_bytes()
    back_mine, back_theirs = tmp_path / "back_mine", tmp_path / "back_theirs"
    assert ours("decrypt", theirs, back_mine, key_file, iv_file) == 0
    assert openssl_enc(mine, back_theirs, key, iv, decrypt=True).returncode == 0
    assert back_mine.read_bytes() == back_theirs.read_bytes() == plain.read_bytes()


def test_key_equal_to_iv_is_byte_identical(tmp_path: Path) -> None:
    key = secrets.token_bytes(16)
    key_file = hex_file(tmp_path / "k.hex", key)
    plain = tmp_path / "p"
    plain.write_bytes(os.urandom(1000))
    assert ours("encrypt", plain, tmp_path / "o", key_file, key_file) == 0
    assert openssl_enc(plain, tmp_path / "t", key, key).returncode == 0
    assert (tmp_path / "o").read_bytes() == (tmp_path / "t").read_bytes()
    assert ours("decrypt", tmp_path / "t", tmp_path / "back", key_file, key_file) == 0
    assert (tmp_path / "back").read_bytes() == plain.read_bytes()


def test_openssl_decrypt_refuses_bad_padding_and_writes_nothing(
    tmp_path: Path, key_iv: tuple[bytes, bytes, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    key, iv, key_file, iv_file = key_iv
    plain = tmp_path / "p"
    plain.write_bytes(os.urandom(100))
    enc = tmp_path / "e"
    assert openssl_enc(plain, enc, key, iv).returncode == 0
    wrong = hex_file(tmp_path / "wrong.hex", secrets.token_bytes(16))
    out = tmp_path / "out"
    assert ours("decrypt", enc, out, wrong, iv_file) == 1
    err = capsys.readouterr().err
    assert "bad padding" in err and len(err.splitlines()) == 1 and not out.exists()
    assert key.hex() not in err and iv.hex() not in err
    (tmp_path / "odd").write_bytes(enc.read_bytes()[:-3])
    assert ours("decrypt", tmp_path / "odd", out, key_file, iv_file) == 1
    assert "whole number of AES blocks" in capsys.readouterr().err
    short = hex_file(tmp_path / "short.hex", b"\x01" * 8)
    assert ours("encrypt", plain, out, short, iv_file) == 2
    assert "32 hex characters" in capsys.readouterr().err
    assert ours("encrypt", plain, out, tmp_path / "missing.hex", iv_file) == 2
    assert not out.exists()


@pytest.mark.parametrize("piece", [1, 7, 16, 100, 4096, 1 << 20])
def test_openssl_source_streams_any_piece_size(
    tmp_path: Path, key_iv: tuple[bytes, bytes, Path, Path], piece: int
) -> None:
    key, iv, _, _ = key_iv
    plain = os.urandom(70_001)
    (tmp_path / "p").write_bytes(plain)
    assert openssl_enc(tmp_path / "p", tmp_path / "e", key, iv).returncode == 0
    source = OpenSSLSource(tmp_path / "e", key, iv, "e")
    assert source.length == len(plain)
    assert b"".join(bytes(c) for c in source.chunks(piece)) == plain


def test_parse_hex16_never_echoes_its_input() -> None:
    secret = "ab" * 15 + "zz"
    with pytest.raises(KeyFormatError) as info:
        parse_hex16(secret, "the IV file")
    assert secret not in str(info.value) and "32 hex characters" in str(info.value)


# --- recipe-encrypted models: loaded in memory, and built into a wheel --------------------------


def recipe_encrypt(xml: Path, out_xml: Path, key: bytes, iv: bytes) -> Path:
    """The recipe as people run it, on the .xml and on the .bin."""
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    assert openssl_enc(xml, out_xml, key, iv).returncode == 0
    assert openssl_enc(xml.with_suffix(".bin"), out_xml.with_suffix(".bin"), key, iv).returncode == 0
    return out_xml


@pytest.mark.parametrize("same", [False, True], ids=["key-iv", "key-equals-iv"])
def test_load_openssl_model_and_cli_compile(tmp_path: Path, same: bool, capsys: pytest.CaptureFixture[str]) -> None:
    import openvino as ov

    xml = make_ir(tmp_path / "plain" / "m.xml", 200 << 10, seed=3)
    key = secrets.token_bytes(16)
    iv = key if same else secrets.token_bytes(16)
    enc = recipe_encrypt(xml, tmp_path / "enc" / "m_enc.xml", key, iv)
    x = sample_input()
    model = load_openssl_model(enc, key, iv)
    assert np.array_equal(ov.Core().compile_model(model, "CPU")(x)[0], reference_output(xml, x))

    with pytest.raises(IntegrityError, match="wrong key or IV"):
        load_openssl_model(enc, secrets.token_bytes(16), iv)

    key_file, iv_file = hex_file(tmp_path / "k.hex", key), hex_file(tmp_path / "iv.hex", iv)
    code = main(["compile", str(enc), "--openssl-key-hex-file", str(key_file), "--openssl-iv-hex-file", str(iv_file)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "input   x" in out.out and "[1,64]" in out.out
    wrong = hex_file(tmp_path / "w.hex", secrets.token_bytes(16))
    code = main(["compile", str(enc), "--openssl-key-hex-file", str(wrong), "--openssl-iv-hex-file", str(iv_file)])
    err = capsys.readouterr().err
    assert code == 1 and "wrong key or IV" in err and len(err.strip().splitlines()) == 1
    assert key.hex() not in err and iv.hex() not in err
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == ["m_enc.bin", "m_enc.xml"]


@pytest.mark.slow
def test_recipe_models_go_into_a_wheel_and_out_to_identical_inference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook reads recipe-encrypted models (key != IV and key == IV) and ships them in this format."""
    project = tmp_path / "product"
    plain_a = make_ir(tmp_path / "plain" / "a.xml", 200 << 10, seed=1)
    plain_b = make_ir(tmp_path / "plain" / "b.xml", 120 << 10, seed=2)
    key_a, iv_a, key_b = secrets.token_bytes(16), secrets.token_bytes(16), secrets.token_bytes(16)
    recipe_encrypt(plain_a, project / "models" / "a_enc.xml", key_a, iv_a)
    recipe_encrypt(plain_b, project / "models" / "b_enc.xml", key_b, key_b)
    write_product(project, {
        "legacy": {"xml": "models/a_enc.xml", "source-encryption": "openssl-aes-128-cbc",
                   "key-hex-env": "A_KEY_HEX", "iv-hex-env": "A_IV_HEX"},
        "same": {"xml": "models/b_enc.xml", "source-encryption": "openssl-aes-128-cbc",
                 "key-hex-env": "B_KEY_HEX", "iv-hex-env": "B_KEY_HEX"},
    })  # fmt: skip
    master = secrets.token_bytes(32)
    env = {"OVCRYPT_KEY": master.hex(), "A_KEY_HEX": key_a.hex(), "A_IV_HEX": iv_a.hex(), "B_KEY_HEX": key_b.hex()}
    result = build_wheel(project, env)
    log = result.stdout + result.stderr
    for secret in (master.hex(), key_a.hex(), iv_a.hex(), key_b.hex()):
        assert secret not in log
    wheel = only_wheel(project / "dist")
    unpacked = unpack(wheel, tmp_path / "unpacked")
    for path in unpacked.rglob("*"):  # only this project's format inside: no recipe file, no plaintext IR
        assert not path.name.endswith((".xml", ".bin")), path

    monkeypatch.setenv("OVCRYPT_KEY", master.hex())
    runtime = runtime_for(unpacked / "acme_vision" / "_ovcrypt")
    x = sample_input()
    for name, plain in (("legacy", plain_a), ("same", plain_b)):
        out = runtime.compile_model(name)(x)[0]
        assert np.array_equal(out, reference_output(plain, x)), name

    # And the installed wheel, in a fresh interpreter, as a product would run it.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)  # fmt: skip
    code = (
        "import numpy as np, acme_vision\n"
        "x = np.random.default_rng(123).standard_normal((1, 64)).astype(np.float32)\n"
        "print(acme_vision.compile_model('legacy')(x)[0].tobytes().hex())\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONPATH": str(target), "OVCRYPT_KEY": master.hex()})  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == reference_output(plain_a, sample_input()).tobytes().hex()


def test_public_load_openssl_model_takes_hex(tmp_path: Path) -> None:
    """The documented entry point, `from <package>._ovcrypt import load_openssl_model`, with hex key and IV."""
    import openvino as ov

    import ovcrypt_runtime as runtime

    xml = make_ir(tmp_path / "plain" / "m.xml", 64 << 10, seed=5)
    key, iv = secrets.token_bytes(16), secrets.token_bytes(16)
    enc = recipe_encrypt(xml, tmp_path / "enc" / "m_enc.xml", key, iv)
    model = runtime.load_openssl_model(enc, key.hex(), iv.hex())
    x = sample_input()
    assert np.array_equal(ov.Core().compile_model(model, "CPU")(x)[0], reference_output(xml, x))
    with pytest.raises(runtime.KeyFormatError, match="expected 32 hex characters"):
        runtime.load_openssl_model(enc, "abc", iv.hex())
