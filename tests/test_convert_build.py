"""Issue 11 end to end: a product's table names ONNX sources, the hook converts them in memory and encrypts the IR
into the wheel, and the installed product's inference matches; no plaintext of the sources or of the IR reaches
the wheel, the build folder or the temp folder; `check` and `encrypt` convert too."""

from __future__ import annotations

import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from hatch_ovcrypt.cli import main
from tests.helpers import build_wheel, find_leaks, only_wheel, plaintext_windows, run, unpack, write_product
from tests.test_convert import onnx_mlp, ovc_reference, runtime_reference, sample, save_onnx
from tests.vision_onnx import sample_image, yolo_graph

F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # this CPU defaults to bf16, which would hide fp16/fp32 differences


def infer(model: ov.Model | str, x: np.ndarray) -> np.ndarray:
    core = ov.Core()
    return np.asarray(core.compile_model(model, "CPU", F32)(x)[0])


@pytest.mark.slow
def test_onnx_sources_in_the_table_build_and_match(tmp_path: Path, key_env: dict[str, str]) -> None:
    project = write_product(tmp_path / "product", {
        "det": "models/det.onnx",
        "rec": {"source": "models/rec.onnx", "compress-to-fp16": "false", "input": "x[1,64]"},
        "seg": {"source": "models/seg.onnx", "compress-to-fp16": "false"},
    })  # fmt: skip
    text = (project / "pyproject.toml").read_text().replace('compress-to-fp16 = "false"', "compress-to-fp16 = false")
    (project / "pyproject.toml").write_text(text)
    det = save_onnx(onnx_mlp(seed=1), project / "models" / "det.onnx")
    rec = save_onnx(onnx_mlp(seed=2), project / "models" / "rec.onnx", external="rec.onnx.data")
    seg = save_onnx(yolo_graph(segment=True, seed=2), project / "models" / "seg.onnx")  # ovc's route changes it
    check = run([str(Path(sys.executable).parent / "hatch-ovcrypt"), "check", str(project)], env=key_env)
    assert check.stdout.startswith("ok: 3 model(s)"), check.stdout
    before = set(Path(tempfile.gettempdir()).iterdir())
    build_wheel(project, key_env)
    wheel = only_wheel(project / "dist")
    with zipfile.ZipFile(wheel) as zf:
        blobs = [(n, zf.read(n)) for n in zf.namelist()]
    sources = [det, rec, rec.with_name("rec.onnx.data"), seg]
    reference = ovc_reference(det, tmp_path / "ref" / "det.xml")  # the default: fp16, as ovc and ov.save_model
    seg_ir = runtime_reference(seg, tmp_path / "ref")
    new_tmp = [p for p in set(Path(tempfile.gettempdir()).iterdir()) - before if p.is_file()]
    scanned = [*blobs, *((str(p), p.read_bytes()) for p in new_tmp)]
    scanned += [(str(p), p.read_bytes()) for p in project.rglob("*") if p.is_file() and "models" not in p.parts]
    plain = [*sources, reference, reference.with_suffix(".bin"), seg_ir, seg_ir.with_suffix(".bin")]
    assert find_leaks(plaintext_windows(plain, step=256), scanned) == []
    site = unpack(wheel, tmp_path / "site")
    env = {**key_env, "PYTHONPATH": str(site)}
    x, image = sample(), sample_image()
    code = (
        "import sys, numpy as np\nfrom acme_vision._ovcrypt import compile_model\n"
        "x, image = np.load(sys.argv[1]), np.load(sys.argv[2])\n"
        "for name, data in (('det', x), ('rec', x), ('seg', image)):\n"
        "    for precision, config in (('f32', {'INFERENCE_PRECISION_HINT': 'f32'}), ('default', {})):\n"
        "        outputs = list(compile_model(name, config=config)(data).values())\n"
        "        np.save(f'{sys.argv[3]}/{name}-{precision}.npy', np.concatenate([o.ravel() for o in outputs]))\n"
    )
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "image.npy", image)
    run([sys.executable, "-c", code, str(tmp_path / "x.npy"), str(tmp_path / "image.npy"), str(tmp_path)], env=env)
    assert np.array_equal(np.load(tmp_path / "det-f32.npy"), infer(str(reference), x).ravel())
    assert np.array_equal(np.load(tmp_path / "rec-f32.npy"), infer(str(rec), x).ravel())  # compress-to-fp16 = false
    for precision, config in (("f32", F32), ("default", {})):  # no `input`: bit-identical to OpenVINO reading it
        expected = [np.asarray(o).ravel() for o in ov.Core().compile_model(str(seg), "CPU", config)(image).values()]
        assert np.load(tmp_path / f"seg-{precision}.npy").tobytes() == np.concatenate(expected).tobytes(), precision


def test_bad_conversion_options_and_unreadable_sources_are_reported_with_their_paths(
    tmp_path: Path, key_env: dict[str, str]
) -> None:
    project = write_product(tmp_path, {
        "bad_input": {"source": "models/a.onnx", "input": "x[1,,2"},
        "broken": "models/broken.onnx",
    })  # fmt: skip
    save_onnx(onnx_mlp(), project / "models" / "a.onnx")
    (project / "models" / "broken.onnx").write_bytes(b"not a model")
    result = build_wheel(project, key_env, check=False)
    out = result.stdout + result.stderr
    location = "tool.hatch.build.targets.wheel.hooks.ovcrypt.models"
    assert f"`{location}.bad_input.input` is not what `ovc --input` accepts" in out, out
    assert f"`{location}.broken`" in out and "broken.onnx is not a well-formed ONNX protobuf" in out, out
    assert "2 problems to fix" in out and "Traceback" not in out


def test_cli_encrypt_converts(tmp_path: Path, key: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    source = save_onnx(onnx_mlp(seed=3), tmp_path / "m.onnx")
    (tmp_path / "key").write_text(key.hex())
    assert main(["encrypt", str(source), "--out", str(tmp_path / "enc"), "--key-file", str(tmp_path / "key")]) == 0
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == ["m.bin.ovc", "m.xml.ovc"]
    capsys.readouterr()
    assert main(["compile", str(tmp_path / "enc" / "m.xml.ovc"), "--key-file", str(tmp_path / "key")]) == 0
    assert "input " in capsys.readouterr().out


def test_converted_models_build_reproducibly(tmp_path: Path, key_env: dict[str, str]) -> None:
    """OpenVINO names generated nodes by a per-process counter, so the converted .xml depends on what the process
    did before; a build does the same work in the same order each time, so two builds give the same wheel."""
    project = write_product(tmp_path / "product", {"det": "models/det.onnx", "ir": "models/ir.xml"})
    save_onnx(onnx_mlp(seed=5), project / "models" / "det.onnx")
    from tests.helpers import make_ir

    make_ir(project / "models" / "ir.xml", 8192)
    env = {**key_env, "SOURCE_DATE_EPOCH": "1700000000"}
    wheels = []
    for n in range(2):
        build_wheel(project, env, outdir=tmp_path / f"dist{n}")
        wheels.append(only_wheel(tmp_path / f"dist{n}").read_bytes())
    assert wheels[0] == wheels[1]
