"""The layout shows the architecture (issue 19): the runtime at the top level as `runtime/ovcrypt_runtime`,
grouped by concern with its imports flowing one way; the plugin's wheel, sdist and editable install carry it
without a symlink; and each product ships only the runtime its models use, which imports and works alone.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from hatch_ovcrypt.cli import main
from hatch_ovcrypt.hook.vendoring import RUNTIME_DIR, RuntimeParts, runtime_modules
from hatch_ovcrypt.hook.writer import render_table
from tests.helpers import REPO, make_ir, reference_output, run, sample_input
from tests.venvs import Venv

LLM = REPO / "tests" / "fixtures" / "tiny_llm"
# The runtime's groups, lowest first: a module may import its own group and the groups below it, never above.
GROUP_ORDER = [
    ("_errors", "_settings", "_hardening"), ("_format",), ("_keys",), ("_loading",), ("_pipelines",), ("__init__",)
]
RANK = {group: rank for rank, groups in enumerate(GROUP_ORDER) for group in groups}


# --- the runtime's packages: one concern each, imports one way ------------------------------------


def runtime_module_names() -> dict[str, Path]:
    """Every runtime module by its dotted name inside the package ("" is the package itself)."""
    names = {}
    for path in sorted(RUNTIME_DIR.rglob("*.py")):
        parts = list(path.relative_to(RUNTIME_DIR).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def group_of(module: str) -> str:
    return module.split(".", maxsplit=1)[0] if module else "__init__"


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[str]:
    """The runtime modules `module` imports (at any depth: TYPE_CHECKING and function-level imports too).

    Fails on an absolute import of the runtime or the plugin, and on a relative import out of the package:
    the runtime is vendored as `<product>._ovcrypt`, where neither would resolve."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    package = [p for p in package if p]
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
            assert not [n for n in names if n.split(".")[0] in ("ovcrypt_runtime", "hatch_ovcrypt")], (path, names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            top = (node.module or "").split(".")[0]
            assert top not in ("ovcrypt_runtime", "hatch_ovcrypt"), f"{path}: absolute import of {node.module}"
        elif isinstance(node, ast.ImportFrom):
            assert node.level - 1 <= len(package), f"{path}: import out of the runtime package"
            base = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            target = ".".join(base)
            assert target in modules, f"{path}: imports {target!r}, which is no runtime module"
            # `from .. import _settings` imports the submodule; `from .spec import x`, the module itself.
            submodules = [f"{target}.{a.name}".lstrip(".") for a in node.names]
            found += [m for m in submodules if m in modules] or [target]
    return found


def test_the_top_level_shows_the_designs_parts() -> None:
    design = {"pyproject.toml", "hatch_ovcrypt", "runtime", "tests", "example_project"}
    assert design <= {p.name for p in REPO.iterdir()}
    assert (REPO / "runtime" / "ovcrypt_runtime" / "__init__.py").is_file()
    assert not (REPO / "hatch_ovcrypt" / "runtime").exists()
    assert RUNTIME_DIR == REPO / "runtime" / "ovcrypt_runtime"


def test_runtime_imports_flow_one_way_without_cycles() -> None:
    modules = runtime_module_names()
    assert set(map(group_of, modules)) == set(RANK), "a runtime group is missing from GROUP_ORDER, or one is new"
    graph = {module: imports_of(module, path, modules) for module, path in modules.items()}
    upward = [
        f"{m} -> {t}"
        for m, targets in graph.items()
        for t in targets
        if group_of(t) != group_of(m) and RANK[group_of(t)] >= RANK[group_of(m)]
    ]
    assert upward == [], "imports back up (groups, lowest first: " + " < ".join("/".join(g) for g in GROUP_ORDER) + ")"

    # No cycle among the modules themselves (a package's __init__ importing its own submodule is no cycle).
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in graph[module]:
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, module, target]))
            if target not in state:
                visit(target, [*trail, module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


# --- the plugin carries the runtime without a symlink ---------------------------------------------


def copy_of_the_repository(dest: Path) -> Path:
    ignore = shutil.ignore_patterns(
        ".venv*", ".git", "dist", "build", "__pycache__", ".*_cache", ".demo", "example_project", "benchmarks"
    )
    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


@pytest.mark.slow
def test_the_plugin_sdist_and_the_wheel_built_from_it_carry_ovcrypt_runtime(tmp_path: Path) -> None:
    """`python -m build` builds the sdist, then the wheel from that sdist: both must hold the runtime."""
    src = copy_of_the_repository(tmp_path / "hatch-ovcrypt")
    out = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)])
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    with tarfile.open(sdist) as tf:
        in_sdist = {name.split("/", 1)[1] for name in tf.getnames() if "/" in name}
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    modules = [p.as_posix() for p in runtime_modules(RuntimeParts())]
    assert {f"runtime/ovcrypt_runtime/{m}" for m in modules} <= in_sdist
    assert {f"ovcrypt_runtime/{m}" for m in modules} <= in_wheel
    assert not [n for n in in_sdist | in_wheel if n.startswith("hatch_ovcrypt/runtime")]
    assert not [n for n in in_wheel if n.startswith("runtime/")]

    env = Venv(tmp_path / "venv")
    env.pip_install(str(wheel))
    where = json.loads(env.python_code(
        "import json, ovcrypt_runtime, hatch_ovcrypt.hook.vendoring as v\n"
        "print(json.dumps([ovcrypt_runtime.__file__, str(v.RUNTIME_DIR)]))"
    ).stdout)  # fmt: skip
    assert all(Path(p).is_relative_to(env.site_packages) for p in where), where


@pytest.mark.slow
def test_an_editable_install_of_the_plugin_imports_the_runtime_from_the_source_tree(tmp_path: Path) -> None:
    src = copy_of_the_repository(tmp_path / "hatch-ovcrypt")
    env = Venv(tmp_path / "venv")
    env.pip_install("-e", str(src))
    where = json.loads(env.python_code(
        "import json, ovcrypt_runtime, hatch_ovcrypt.hook.vendoring as v\n"
        "print(json.dumps([ovcrypt_runtime.__file__, str(v.RUNTIME_DIR)]))"
    ).stdout)  # fmt: skip
    assert Path(where[0]) == src / "runtime" / "ovcrypt_runtime" / "__init__.py"
    assert Path(where[1]) == src / "runtime" / "ovcrypt_runtime"
    assert not [p for p in src.rglob("*") if p.is_symlink()]


# --- each product ships only what its models use ----------------------------------------------------

COMBINATIONS = {  # holders and signature: test_holders_build and test_signing build those
    "ir": RuntimeParts(pipelines=False, openssl=False, holders=False, signature=False, cache=False),
    "ir+cache": RuntimeParts(pipelines=False, openssl=False, holders=False, signature=False, cache=True),
    "ir+openssl": RuntimeParts(pipelines=False, openssl=True, holders=False, signature=False, cache=False),
    "folder": RuntimeParts(pipelines=True, openssl=False, holders=False, signature=False, cache=False),
    "all": RuntimeParts(pipelines=True, openssl=True, holders=False, signature=False, cache=True),
}
# What every product shipped before the runtime was split into parts (round 2's last commit, 7e91707: 18 modules,
# 3,400 lines, and the one-line header the hook writes into each).
SHIPPED_BEFORE_THE_SPLIT = 3418

# Run in a fresh interpreter against the rendered product: it must import and work with only what shipped.
USE = """
import json, sys
import numpy as np
from {package} import _ovcrypt as rt

x = np.random.default_rng(123).standard_normal((1, 64)).astype(np.float32)
report = {{"detector": rt.compile_model("detector")(x)[0].tolist(), "refused": {{}}}}
if "legacy" in rt.model_names():
    report["legacy"] = rt.compile_model("legacy")(x)[0].tolist()
if "assistant" in rt.model_names():
    report["ir_of_assistant"] = rt.read_model("assistant").get_friendly_name()
    report["tokens"] = rt.tokenizer("assistant").encode("hello").input_ids.data.shape[-1]
for function, args in (("llm_pipeline", ("detector",)), ("load_openssl_model", ("m.xml", "00" * 16, "00" * 16))):
    try:
        getattr(rt, function)(*args)
    except rt.UnsupportedModelError as exc:
        report["refused"][function] = str(exc)
    except Exception as exc:
        report["refused"][function] = "shipped: " + type(exc).__name__
import os, tempfile, warnings
rt.unload()  # compile again, this time through the compiled-model cache
cache_dir = tempfile.mkdtemp()
try:
    rt.compile_model("detector", cache_dir=cache_dir)
    report["cache_entries"] = len([n for n in os.listdir(cache_dir) if n.endswith(".ovc")])
except rt.UnsupportedModelError as exc:
    report["refused"]["cache_dir"] = str(exc)
rt.unload()
os.environ["OVCRYPT_CACHE_DIR"] = cache_dir
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    report["with_env"] = rt.compile_model("detector")(x)[0].tolist()
report["warnings"] = [str(w.message) for w in caught]
report["warned_from"] = [w.filename for w in caught]  # the caller's file, never the runtime's
leaked = [m for m in sys.modules if m.split(".")[0] in ("hatch_ovcrypt", "ovcrypt_runtime")]
report["outside"] = leaked
print(json.dumps(report))
"""


def shipped_lines(ovcrypt: Path) -> int:
    """The lines of Python a product's `_ovcrypt` holds (the runtime's modules; not the stub, not the models)."""
    return sum(len(p.read_text("utf-8").splitlines()) for p in ovcrypt.rglob("*.py"))


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """An IR `detector`, an OpenSSL-recipe IR `legacy` (made by our byte-identical openssl-encrypt) and their env."""
    root = tmp_path_factory.mktemp("combinations")
    make_ir(root / "models" / "detector.xml", 16 << 10)
    plain = make_ir(root / "plain" / "legacy.xml", 16 << 10, seed=5)
    (root / "k.hex").write_text("11" * 16)
    (root / "iv.hex").write_text("22" * 16)
    for suffix in (".xml", ".bin"):
        enc = root / "models" / f"legacy_enc{suffix}"
        hexes = ["--key-hex-file", str(root / "k.hex"), "--iv-hex-file", str(root / "iv.hex")]
        assert main(["openssl-encrypt", str(plain.with_suffix(suffix)), str(enc), *hexes]) == 0
    return root, {"LEGACY_KEY_HEX": "11" * 16, "LEGACY_IV_HEX": "22" * 16}


def hook_table(combination: str) -> dict[str, object]:
    models: dict[str, object] = {"detector": "models/detector.xml"}
    if COMBINATIONS[combination].openssl:
        models["legacy"] = {"xml": "models/legacy_enc.xml", "source-encryption": "openssl-aes-128-cbc",
                            "key-hex-env": "LEGACY_KEY_HEX", "iv-hex-env": "LEGACY_IV_HEX"}  # fmt: skip
    if COMBINATIONS[combination].pipelines:
        models["assistant"] = str(LLM)
    return {"models": models, "compiled-model-cache": COMBINATIONS[combination].cache}


@pytest.mark.slow
@pytest.mark.parametrize("combination", list(COMBINATIONS))
def test_each_combination_ships_only_its_parts_and_works_alone(
    combination: str, sources: tuple[Path, dict[str, str]], tmp_path: Path, suite_count: Callable[[str, int], None]
) -> None:
    root, environ = sources
    parts = COMBINATIONS[combination]
    package = "p_" + combination.replace("+", "_")
    site = tmp_path / "site"
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text("")
    key = bytes(range(32))
    ovcrypt = site / package / "_ovcrypt"
    render_table(hook_table(combination), root, ovcrypt, package=package, key=key, environ=environ)

    shipped = sorted(p.relative_to(ovcrypt) for p in ovcrypt.rglob("*.py"))
    assert shipped == runtime_modules(parts)
    lines = shipped_lines(ovcrypt)
    suite_count(f"runtime lines a product ships: {parts.name()}", lines)
    print(f"\n{combination}: {len(shipped)} modules, {lines} lines")

    stub = (ovcrypt / "__init__.pyi").read_text()
    assert ("def llm_pipeline(" in stub) == parts.pipelines and ("import openvino_genai" in stub) == parts.pipelines
    assert ("def load_openssl_model(" in stub) == parts.openssl

    env = {**os.environ, "PYTHONPATH": str(site), "OVCRYPT_KEY": key.hex()}
    result = subprocess.run([sys.executable, "-c", USE.format(package=package)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["outside"] == [], "the vendored runtime imported the plugin or the source runtime"
    x = sample_input()
    assert report["detector"] == reference_output(root / "models" / "detector.xml", x).tolist()
    if parts.openssl:
        assert report["legacy"] == reference_output(root / "plain" / "legacy.xml", x).tolist()
    if parts.pipelines:
        assert report["ir_of_assistant"] and report["tokens"] > 0
    refused = report["refused"]
    if parts.pipelines:
        assert "kind 'ir'" in refused["llm_pipeline"]  # shipped: it refuses the IR itself
    else:
        assert refused["llm_pipeline"].startswith("this product ships no GenAI pipelines: ")
        assert "llm_pipeline()" in refused["llm_pipeline"] and "\n" not in refused["llm_pipeline"]
    if parts.openssl:
        assert not refused["load_openssl_model"].startswith("this product ships no")
    else:
        assert refused["load_openssl_model"].startswith("this product ships no OpenSSL-recipe loader: ")
    assert report["with_env"] == report["detector"]
    if parts.cache:  # an entry written by the first compile, read by the second: no warning
        assert report["cache_entries"] == 1 and "cache_dir" not in refused and report["warnings"] == []
    else:  # cache_dir= is refused; $OVCRYPT_CACHE_DIR alone warns and compiles without a cache
        assert refused["cache_dir"].startswith("this product ships no compiled-model cache, so cache_dir= cannot")
        assert "`compiled-model-cache = true`" in refused["cache_dir"] and "\n" not in refused["cache_dir"]
        assert [w for w in report["warnings"] if "$OVCRYPT_CACHE_DIR cannot be used" in w], report["warnings"]
        assert report["warnings"][0].startswith("hatch-ovcrypt: ")
        assert not [f for f in report["warned_from"] if "_ovcrypt" in f], report["warned_from"]


def test_an_ir_only_product_ships_measurably_less_runtime() -> None:
    lines = {
        name: sum(len((RUNTIME_DIR / m).read_text("utf-8").splitlines()) for m in runtime_modules(parts))
        for name, parts in COMBINATIONS.items()
    }
    print("\nruntime lines per combination (sources, before the one-line generated header):", lines)
    assert lines["ir"] < lines["ir+openssl"] < lines["all"] and lines["ir"] < lines["folder"] < lines["all"]
    assert lines["ir"] < lines["ir+cache"] < lines["all"]
    assert lines["ir"] <= 0.95 * lines["all"], lines
    # With its generated headers (one line per module), what an IR-only product ships now, against before.
    assert lines["ir"] + len(runtime_modules(COMBINATIONS["ir"])) <= 0.95 * SHIPPED_BEFORE_THE_SPLIT, lines
