"""Issue 20: every openvino-genai pipeline from an encrypted wheel, each giving exactly what the same pipeline built
from the plain folder gives, in the same fresh venv; and nothing decrypted left in the wheel, the build folder,
the temp folders or /dev/shm, while the wheel is built and while its pipelines are built and run.

ONE wheel holds every new kind (built once per module, see `product`); one script in the venv builds each
pipeline from the wheel and from the plain folder and prints both results, which the tests compare.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, build_wheel, only_wheel, write_product
from tests.leakscan import LeakScanner, tree_blobs
from tests.venvs import Venv

FIXTURES = REPO / "tests" / "fixtures"
ADAPTER = FIXTURES / "tiny_llm_lora" / "adapter_model.safetensors"
# Model name in the wheel -> its plain folder (or file) under models/ of the product.
MODELS = {
    "chat": FIXTURES / "tiny_llm",
    "draft": FIXTURES / "tiny_llm_draft",
    "style": ADAPTER,
    "listener": FIXTURES / "tiny_whisper",
    "speaker": FIXTURES / "tiny_tts",
    "embedder": FIXTURES / "tiny_embedding",
    "ranker": FIXTURES / "tiny_rerank",
    "sdxl": FIXTURES / "tiny_sdxl",
    "sd3": FIXTURES / "tiny_sd3",
    "flux": FIXTURES / "tiny_flux",
}
KINDS = {"chat": "llm", "draft": "llm", "style": "adapter", "listener": "whisper", "speaker": "text2speech",
         "embedder": "text_embedding", "ranker": "text_rerank", "sdxl": "text2image", "sd3": "text2image",
         "flux": "text2image"}  # fmt: skip

# Runs in the product's venv: each result as [from the wheel, from the plain folder].
SCRIPT = r"""
import hashlib, json, os, stat, sys, fcntl
from pathlib import Path
import numpy as np, openvino as ov, openvino_genai as g
import acme_vision._ovcrypt as oc

P = Path(sys.argv[1])  # the plain models
out = {}
import time
T0 = time.monotonic()
def lap(label): print(f"{label} {time.monotonic() - T0:.1f} s", file=sys.stderr)
def digest(a): return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()

t = np.arange(16000 * 2) / 16000
speech = (0.5 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)
out["whisper"] = [oc.whisper_pipeline("listener").generate(speech).texts,
                  g.WhisperPipeline(str(P / "listener"), "CPU").generate(speech).texts]
out["whisper attribute"] = [type(oc.listener).__name__, "WhisperPipeline"]
out["whisper config"] = [oc.listener.get_generation_config().max_new_tokens,
                         g.WhisperPipeline(str(P / "listener"), "CPU").get_generation_config().max_new_tokens]
speaker = ov.Tensor(np.linspace(-1, 1, 512, dtype=np.float32)[None])
out["tts"] = [digest(oc.text2speech_pipeline("speaker").generate("hello world", speaker).speeches[0].data),
              digest(g.Text2SpeechPipeline(str(P / "speaker"), "CPU").generate("hello world", speaker)
                     .speeches[0].data)]
docs = ["hello world", "The quick brown fox jumps over the lazy dog.", "a photo of a red cat", "Why is the sky blue?"]
cfg = g.TextEmbeddingPipeline.Config()
cfg.pooling_type = g.TextEmbeddingPipeline.PoolingType.MEAN
cfg.normalize = True
for label, c in (("embedding", None), ("embedding mean", cfg)):
    enc = oc.text_embedding_pipeline("embedder", config=c)
    plain = g.TextEmbeddingPipeline(str(P / "embedder"), "CPU", c)
    out[label] = [np.array(enc.embed_documents(docs)).tolist() + [list(enc.embed_query("what is a fox?"))],
                  np.array(plain.embed_documents(docs)).tolist() + [list(plain.embed_query("what is a fox?"))]]
rcfg = g.TextRerankPipeline.Config()
rcfg.top_n = 4
out["rerank"] = [oc.text_rerank_pipeline("ranker", config=rcfg).rerank("what is a fox?", docs),
                 g.TextRerankPipeline(str(P / "ranker"), "CPU", rcfg).rerank("what is a fox?", docs)]
with oc.memory_folder("embedder") as path:
    links = sorted(p for p in path.rglob("*") if not p.is_dir())
    targets = {str(os.readlink(p)).rsplit("/", 1)[0] for p in links}
    seals = set()
    for p in links:
        fd = os.open(p, os.O_RDONLY)
        seals.add(fcntl.fcntl(fd, fcntl.F_GET_SEALS) & 0xF)
        os.close(fd)
    mode = stat.S_IMODE(path.stat().st_mode)
    enc = g.TextEmbeddingPipeline(str(path), "CPU")
out["memory_folder"] = [[len(links), sorted(targets), sorted(seals), oct(mode), path.exists()],
                        [9, ["/proc/self/fd"], [0xF], "0o700", False]]
out["memory_folder embedding"] = [np.array(enc.embed_documents(docs)).tolist(),
                                  np.array(g.TextEmbeddingPipeline(str(P / "embedder"), "CPU")
                                           .embed_documents(docs)).tolist()]

lap("path-only")
plain_llm = g.LLMPipeline(str(P / "chat"), "CPU")
plain8 = str(plain_llm.generate("hello", max_new_tokens=8))
spec = oc.llm_pipeline("chat", draft="draft")
plain_spec = g.LLMPipeline(str(P / "chat"), "CPU", draft_model=g.draft_model(str(P / "draft"), "CPU"))
out["speculative"] = [str(spec.generate("hello", max_new_tokens=8, num_assistant_tokens=3)),
                      str(plain_spec.generate("hello", max_new_tokens=8, num_assistant_tokens=3))]
out["speculative is the main model's"] = [out["speculative"][0], plain8]
lora = oc.llm_pipeline("chat", adapters={"style": 0.8})
plain_adapter = g.AdapterConfig(g.Adapter(str(P / "style.safetensors")), 0.8)
plain_lora = g.LLMPipeline(str(P / "chat"), "CPU", adapters=plain_adapter)
out["lora"] = [str(lora.generate("hello", max_new_tokens=8)), str(plain_lora.generate("hello", max_new_tokens=8))]
out["lora off"] = [str(lora.generate("hello", max_new_tokens=8, adapters=g.AdapterConfig())), plain8]
out["lora changes the text"] = [out["lora"][0] != plain8, True]
scheduler = g.SchedulerConfig()
scheduler.cache_size = 1
config = g.GenerationConfig(max_new_tokens=8, do_sample=False)
cb = oc.continuous_batching_pipeline("chat", scheduler_config=scheduler)
plain_cb = g.ContinuousBatchingPipeline(str(P / "chat"), scheduler, "CPU")
out["continuous batching"] = [[r.m_generation_ids[0] for r in cb.generate(["hello", "The quick"], [config, config])],
                              [r.m_generation_ids[0]
                               for r in plain_cb.generate(["hello", "The quick"], [config, config])]]
out["llm scheduler_config"] = [str(oc.llm_pipeline("chat", scheduler_config=scheduler).generate("hello")),
                               str(g.LLMPipeline(str(P / "chat"), "CPU", scheduler_config=scheduler).generate("hello"))]

lap("llm")
y, x = np.mgrid[0:32, 0:32]
image = ov.Tensor(np.stack([x * 8, y * 8, (x + y) * 4], axis=-1).astype(np.uint8)[None])
mask = np.zeros((1, 32, 32, 3), np.uint8)
mask[:, 8:24, 8:24] = 255
mask = ov.Tensor(mask)
kw = dict(width=32, height=32, num_inference_steps=2, rng_seed=42)
i2i = dict(kw, num_inference_steps=4, strength=0.5)
runs = [("sdxl", "text2image"), ("sd3", "text2image"), ("flux", "text2image"), ("sd3", "image2image"),
        ("sdxl", "image2image"), ("flux", "inpainting"), ("sdxl", "inpainting")]
classes = {"text2image": g.Text2ImagePipeline, "image2image": g.Image2ImagePipeline,
           "inpainting": g.InpaintingPipeline}
for family, what in runs:
    def run(p):
        if what == "text2image":
            return p.generate("a photo of a red cat", **kw).data
        if what == "image2image":
            return p.generate("a photo of a red cat", image, **i2i).data
        return p.generate("a photo of a red cat", image, mask, **kw).data
    enc = getattr(oc, f"{what}_pipeline")(family)
    out[f"{family} {what}"] = [digest(run(enc)), digest(run(classes[what](str(P / family), "CPU")))]
lap("images")
print("RESULTS " + json.dumps(out))
"""


@dataclass(frozen=True)
class Product:
    models: Path  # the plain models, as the product project holds them
    results: dict[str, list[Any]]
    leak_scans: int  # how many scans of the temp folders and /dev/shm ran while the script ran


def _shm_entries() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def _scan_while_running(proc: subprocess.Popen[str], scanner: LeakScanner, folders: list[Path],
                        shm_before: set[str]) -> tuple[list[str], int]:  # fmt: skip
    """Scan `folders` and the new entries of /dev/shm every 0.3 s until `proc` ends: (leaks found, scans).
    Small folders only: a scan competes with the script for the 2 cores."""
    leaks: list[str] = []
    scans = 0
    while proc.poll() is None:
        blobs = []
        for folder in folders:
            try:
                blobs += list(tree_blobs(folder))
            except OSError:  # a memory folder removed while walked: walk again next time
                continue
        for name in sorted(_shm_entries() - shm_before):
            path = Path("/dev/shm") / name
            try:
                if path.is_file() and not path.is_symlink() and path.stat().st_size < (64 << 20):
                    blobs.append((str(path), path.read_bytes()))
            except OSError:
                continue
        leaks += scanner.scan_blobs(blobs)
        scans += 1
        time.sleep(0.3)
    return leaks, scans


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Product:
    root = tmp_path_factory.mktemp("pipelines")
    project = write_product(root / "product", {name: f"models/{name}" + (".safetensors" if name == "style" else "")
                                               for name in MODELS})  # fmt: skip
    models = project / "models"
    models.mkdir()
    for name, source in MODELS.items():
        if source.is_file():
            shutil.copy(source, models / f"{name}.safetensors")
        else:
            shutil.copytree(source, models / name)
    # One label per model (its files joined by runs of zeros, which the scanner never reports): the scan's cost
    # grows with the number of labels times the bytes scanned, and the wheel alone is 10 MB.
    scanner = LeakScanner({name: b"\0" * 32 + (b"\0" * 32).join(p.read_bytes() for p in sorted(
        (models / name).rglob("*") if (models / name).is_dir() else [models / f"{name}.safetensors"]) if p.is_file())
        for name in MODELS})  # fmt: skip
    key = os.urandom(32).hex()
    build_tmp = root / "build-tmp"
    build_tmp.mkdir()
    started = time.monotonic()
    build_wheel(project, {"OVCRYPT_KEY": key}, extra_env={"TMPDIR": str(build_tmp)})
    print(f"build {time.monotonic() - started:.1f} s")
    wheel = only_wheel(project / "dist")
    # while built: the wheel (each member), the build folder, the build's temp folder
    blobs = [*tree_blobs(project / "dist"), *tree_blobs(project, exclude=[models, project / "dist"]),
             *tree_blobs(build_tmp)]  # fmt: skip
    assert any(name.endswith("listener/openvino_encoder_model.bin.ovc") for name, _ in blobs)
    assert scanner.scan_blobs(blobs) == []
    env = Venv(root / "venv")
    env.pip_install(str(wheel))
    # (the plain models are read from `models/` by the same script: the leak scan skips that folder)
    run_tmp = root / "run-tmp"
    run_tmp.mkdir()
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith("OVCRYPT_")}, "OVCRYPT_KEY": key,
                "TMPDIR": str(run_tmp)}  # fmt: skip
    shm_before = _shm_entries()
    started = time.monotonic()
    proc = subprocess.Popen([str(env.python), "-c", SCRIPT, str(models)], cwd=root, env=full_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.communicate(timeout=600)), daemon=True)
    reader.start()
    leaks, scans = _scan_while_running(proc, scanner, [run_tmp], shm_before)
    reader.join()
    print(f"script {time.monotonic() - started:.1f} s, {scans} scans")
    assert proc.returncode == 0, out[1][-5000:]
    assert leaks == [], leaks
    # and after: the run's temp folder, the current folder, the venv (the installed wheel), new /dev/shm entries
    after = [*tree_blobs(run_tmp), *tree_blobs(env.site_packages / "acme_vision"),
             *tree_blobs(root, exclude=[models, root / "venv", project / "dist", build_tmp])]  # fmt: skip
    assert scanner.scan_blobs(after) == []
    assert not [p for p in run_tmp.rglob("*") if not p.is_symlink()], "memory folders left behind"
    line = next(line for line in out[0].splitlines() if line.startswith("RESULTS "))
    return Product(models, json.loads(line[len("RESULTS ") :]), scans)


PAIRS = ["whisper", "whisper attribute", "whisper config", "tts", "embedding", "embedding mean", "rerank",
         "memory_folder", "memory_folder embedding", "speculative", "speculative is the main model's", "lora",
         "lora off", "lora changes the text", "continuous batching", "llm scheduler_config", "sdxl text2image",
         "sd3 text2image", "flux text2image", "sd3 image2image", "sdxl image2image", "flux inpainting",
         "sdxl inpainting"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("what", PAIRS)
def test_each_pipeline_from_the_wheel_equals_the_plain_folders(product: Product, what: str) -> None:
    encrypted, plain = product.results[what]
    assert encrypted == plain, what


@pytest.mark.slow
def test_no_plaintext_while_built_and_while_running(product: Product) -> None:
    """The module fixture scanned the wheel, build folder and build temp folder after the build, and the run's
    temp folder, /dev/shm and the venv every 0.3 s while the script built and ran every pipeline, then after."""
    assert product.leak_scans >= 3, "the script ended before the scans could watch it"


# --- build side: kinds, refusals, the adapter ----------------------------------------------------------------


def test_each_new_kind_is_detected_from_its_files(tmp_path: Path) -> None:
    from hatch_ovcrypt.checks.kinds import detect_kind, json_reader

    for name, source in MODELS.items():
        if source.is_dir():
            files = {p.relative_to(source).as_posix(): p for p in source.rglob("*") if p.is_file()}

            def read(path: str, found: dict[str, Path] = files) -> bytes:
                return found[path].read_bytes()

            assert detect_kind(set(files), json_reader(read)) == KINDS[name], name
    peft = {"adapter_model.safetensors", "adapter_config.json"}
    assert detect_kind(peft, lambda p: {}) == "adapter"
    assert detect_kind({"model_index.json"}, lambda p: {"_class_name": "LTXPipeline"}) == "text2video"
    lcm = {"_class_name": "LatentConsistencyModelPipeline"}
    assert detect_kind({"model_index.json"}, lambda p: lcm) == "text2image"


def test_an_unknown_image_class_and_a_non_whisper_encoder_decoder_are_refused_with_the_reason(tmp_path: Path) -> None:
    from hatch_ovcrypt.config import ConfigurationError
    from hatch_ovcrypt.hook.writer import render_table

    folder = tmp_path / "odd"
    shutil.copytree(FIXTURES / "tiny_sd", folder)
    (folder / "model_index.json").write_text('{"_class_name": "KandinskyPipeline"}')
    with pytest.raises(ConfigurationError) as info:
        render_table({"models": {"odd": str(folder)}}, tmp_path, tmp_path / "_ovcrypt", package="acme_vision",
                     key=bytes(32), environ={})  # fmt: skip
    message = str(info.value)
    assert "'KandinskyPipeline' export" in message and "FluxPipeline" in message and 'kind = "files"' in message


def test_an_adapter_file_ships_as_kind_adapter_and_loads_from_memory(tmp_path: Path) -> None:
    import numpy as np
    import openvino_genai as genai

    from hatch_ovcrypt.hook.writer import render_table
    from ovcrypt_runtime._errors import UnsupportedModelError
    from ovcrypt_runtime._loading.runtime import Runtime
    from ovcrypt_runtime._pipelines import genai as _genai

    render_table({"models": {"chat": str(FIXTURES / "tiny_llm"), "style": str(ADAPTER),
                             "peft": str(ADAPTER.parent)}}, tmp_path, tmp_path / "_ovcrypt",
                 package="acme_vision", key=bytes(32), environ={})  # fmt: skip
    manifest = json.loads((tmp_path / "_ovcrypt" / "manifest.json").read_text())["models"]
    assert manifest["style"]["kind"] == manifest["peft"]["kind"] == "adapter"
    assert sorted(manifest["style"]["files"]) == ["adapter_model.safetensors"]
    rt = Runtime(tmp_path / "_ovcrypt", "acme_vision")
    rt.keyring.add(bytes(32))
    assert rt.read_file("style", "adapter_model.safetensors") == ADAPTER.read_bytes()
    plain_adapter = genai.AdapterConfig(genai.Adapter(str(ADAPTER)))
    plain = genai.LLMPipeline(str(FIXTURES / "tiny_llm"), "CPU", adapters=plain_adapter)
    for adapters in ("style", ["peft"], {"style": 1.0}):
        pipe = _genai.llm_pipeline(rt, "chat", "CPU", {}, adapters=adapters)
        assert pipe.generate("hello", max_new_tokens=6) == plain.generate("hello", max_new_tokens=6), adapters
    with pytest.raises(UnsupportedModelError, match="'chat' is of kind 'llm'; adapters= needs a model of kind adapter"):
        _genai.llm_pipeline(rt, "chat", "CPU", {}, adapters="chat")
    with pytest.raises(UnsupportedModelError, match="draft= needs a model of kind llm"):
        _genai.llm_pipeline(rt, "chat", "CPU", {}, draft="style")
    assert np.array_equal(np.frombuffer(rt.read_file("peft", "adapter_model.safetensors"), np.uint8),
                          np.fromfile(ADAPTER, np.uint8))  # fmt: skip


def test_memory_folder_refuses_where_the_platform_has_no_memory_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, segment_decryptions: list[int]
) -> None:
    """Without memfd_create and a tmpfs, a path-only pipeline is refused with the platform and the reason, before
    a byte is decrypted, and nothing is written to disk."""
    from hatch_ovcrypt.hook.writer import render_table
    from ovcrypt_runtime._errors import UnsupportedModelError
    from ovcrypt_runtime._loading.runtime import Runtime
    from ovcrypt_runtime._pipelines import genai as _genai
    from ovcrypt_runtime._pipelines import memfiles as _memfiles

    render_table({"models": {"embedder": str(FIXTURES / "tiny_embedding")}}, tmp_path, tmp_path / "_ovcrypt",
                 package="acme_vision", key=bytes(32), environ={})  # fmt: skip
    rt = Runtime(tmp_path / "_ovcrypt", "acme_vision")
    rt.keyring.add(bytes(32))
    monkeypatch.setattr(_memfiles, "_memfd_usable", lambda: False)
    monkeypatch.setattr(_memfiles, "memory_backed_dir", lambda candidate=None: None)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    tempfile.tempdir = None
    try:
        with pytest.raises(UnsupportedModelError, match=r"TextEmbeddingPipeline only from a folder path.*linux.*never "
                                                        r"writes decrypted files to disk"):  # fmt: skip
            _genai.text_embedding_pipeline(rt, "embedder", "CPU", {})
    finally:
        tempfile.tempdir = None
    assert segment_decryptions == [] and not list((tmp_path / "tmp").iterdir())


def test_image_component_configs_need_no_file_but_the_few_python_cannot_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: component configs come from a `{}` stub and setters, equal to Config(path) field by field; only
    the scheduler's config and those setting AutoencoderKL's shift_factor (SD3, Flux) or Flux's guidance_embeds
    go through a memory folder."""
    import openvino_genai as genai

    from hatch_ovcrypt.hook.writer import render_table
    from ovcrypt_runtime._loading.runtime import Runtime
    from ovcrypt_runtime._pipelines import genai as _genai
    from ovcrypt_runtime._pipelines.imageconfigs import SETTABLE, config_from_json, needs_file

    components = {"text_encoder": "CLIPTextModel", "text_encoder_2": "CLIPTextModel", "unet": "UNet2DConditionModel",
                  "vae_decoder": "AutoencoderKL"}  # fmt: skip
    for family in ("tiny_sd", "tiny_sdxl", "tiny_sd3", "tiny_flux"):
        transformer = "FluxTransformer2DModel" if family == "tiny_flux" else "SD3Transformer2DModel"
        for sub, component in {**components, "transformer": transformer}.items():
            path = FIXTURES / family / sub / "config.json"
            if not path.is_file() or (family == "tiny_flux" and sub == "text_encoder_2"):  # Flux's is a T5
                continue
            klass = getattr(genai, component).Config
            made, reference = config_from_json(klass, component, path.read_bytes()), klass(str(path))
            for field in SETTABLE[component]:
                assert getattr(made, field) == pytest.approx(getattr(reference, field)), (family, sub, field)
            assert needs_file(component, path.read_bytes()) == (family in ("tiny_sd3", "tiny_flux") and
                                                                 sub == "vae_decoder"), (family, sub)  # fmt: skip
    render_table({"models": {"painter": str(FIXTURES / "tiny_sdxl")}}, tmp_path, tmp_path / "_ovcrypt",
                 package="acme_vision", key=bytes(32), environ={})  # fmt: skip
    rt = Runtime(tmp_path / "_ovcrypt", "acme_vision")
    rt.keyring.add(bytes(32))
    asked: list[list[str]] = []
    from ovcrypt_runtime._pipelines.memfiles import memory_folder as real

    def recording(files: dict[str, bytes], *args: Any) -> Any:
        asked.append(sorted(files))
        return real(files, *args)

    monkeypatch.setattr(_genai, "memory_folder", recording)
    _genai.text2image_pipeline(rt, "painter", "CPU", {})
    assert asked == [["scheduler/scheduler_config.json"]]


def test_text2video_pipeline_gives_the_plain_folders_frames(tmp_path: Path) -> None:
    import numpy as np
    import openvino_genai as genai

    from hatch_ovcrypt.hook.writer import render_table
    from ovcrypt_runtime._loading.runtime import Runtime
    from ovcrypt_runtime._pipelines import genai as _genai

    ltx = FIXTURES / "tiny_ltx"
    render_table({"models": {"director": str(ltx)}}, tmp_path, tmp_path / "_ovcrypt", package="acme_vision",
                 key=bytes(32), environ={})  # fmt: skip
    manifest = json.loads((tmp_path / "_ovcrypt" / "manifest.json").read_text())
    assert manifest["models"]["director"]["kind"] == "text2video"
    rt = Runtime(tmp_path / "_ovcrypt", "acme_vision")
    rt.keyring.add(bytes(32))
    kw: dict[str, Any] = {"width": 32, "height": 32, "num_frames": 9, "num_inference_steps": 2, "rng_seed": 42}
    frames = _genai.text2video_pipeline(rt, "director", "CPU", {}).generate("a photo of a red cat", **kw).video.data
    plain = genai.Text2VideoPipeline(str(ltx), "CPU").generate("a photo of a red cat", **kw).video.data
    assert frames.shape == (1, 9, 32, 32, 3) and np.array_equal(frames, plain)
