"""Real virtual environments for install tests, without downloading openvino into each one.

A new venv gets a .pth that adds this interpreter's site-packages as a site dir: the heavy
dependencies (openvino, cryptography, numpy) are shared, while what is installed into the new venv
(the product wheel, an editable install) lives in it alone, exactly as pip puts it there.
"""

from __future__ import annotations

import site
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Mapping
from pathlib import Path

from tests.helpers import run
from tests.platforms import venv_python


class Venv:
    def __init__(self, root: Path) -> None:
        self.root = root
        venv.EnvBuilder(with_pip=False).create(root)
        self.python = venv_python(root)
        purelib = run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
        self.site_packages = Path(purelib.stdout.strip())
        shared = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
        lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in dict.fromkeys(shared))
        (self.site_packages / "zz_shared_test_deps.pth").write_text(lines)

    def pip_install(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """pip of the test interpreter, installing into this venv (no build isolation: the plugin is shared)."""
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(self.python),
            "install",
            "--no-deps",
            "--no-build-isolation",
        ]
        return run([*cmd, "--disable-pip-version-check", "-q", *args], env=env)

    def python_code(
        self, code: str, *, env: Mapping[str, str] | None = None, cwd: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run([str(self.python), "-c", code], env=env, cwd=cwd, check=check)
