"""The `ovcrypt` build hook. Its module imports nothing heavy: the work is imported in `initialize`.

Like hatch-autorun, it renders into a temporary folder, force-includes the result file by file,
removes the folder in `finalize`, and never writes into the source tree.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

if TYPE_CHECKING:
    from ..checks.project import Plan
    from .writer import ProgressFactory


class OvcryptBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "ovcrypt"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # hatchling also builds hooks just to ask for dependencies()
        self._staging: Path | None = None
        self._plan: Plan | None = None
        self._on_sigterm: _SigtermCleanup | None = None

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        from ..checks.plaintext import sdist_unchecked_warning
        from ..checks.project import check_project, is_from_sdist
        from ..config import ConfigurationError

        root = Path(self.root)
        builder = self.build_config.builder
        if self.target_name != "wheel":
            self._check_other_target(root, builder)
            return
        plan, problems = check_project(self.config, root, builder, build_data=build_data)
        if plan is None:
            removed = self._remove_plaintext_sdist(root, builder)
            note = f"\nhatch-ovcrypt: removed the sdist {removed}: it holds the plaintext models" if removed else ""
            self.app.abort(str(ConfigurationError(problems)) + note)
            return
        if not is_from_sdist(root) and (warning := sdist_unchecked_warning(root)):
            self.app.display_warning(f"hatch-ovcrypt: warning: {warning}")
        self._plan = plan
        self._staging = Path(tempfile.mkdtemp(prefix="hatch-ovcrypt-"))
        atexit.register(shutil.rmtree, self._staging, ignore_errors=True)  # if finalize never runs
        self._on_sigterm = _remove_on_sigterm(self._staging)  # a cancelled CI job: atexit does not run then
        try:
            mapping = self._render(plan, version)
        except Exception as exc:
            self._cleanup()
            self.app.abort(f"hatch-ovcrypt: encrypting the models failed: {type(exc).__name__}: {exc}")
            return
        if version == "editable":
            # A non-empty force_include_editable replaces every other forced inclusion: keep the user's own.
            build_data["force_include_editable"].update(self.build_config.get_force_include())
            build_data["force_include_editable"].update(build_data["force_include"])
            build_data["force_include_editable"].update(mapping)
        else:
            build_data["force_include"].update(mapping)
        build_data["dependencies"].extend(self._missing_requirements(plan))

    def _remove_plaintext_sdist(self, root: Path, builder: Any) -> Path | None:
        """A refused wheel build removes the sdist it finds beside it that holds the plaintext models."""
        from ..checks.plaintext import remove_plaintext_sdist
        from ..config import hook_location, parse_options

        options, _ = parse_options(self.config, root, hook_location(builder.config.target_config, builder.PLUGIN_NAME))
        if options.allow_plaintext_sdist or not self.directory:
            return None
        try:
            return remove_plaintext_sdist(options, root, Path(self.directory))
        except Exception:  # the refusal itself must still be reported
            return None

    def _missing_requirements(self, plan: Plan) -> list[str]:
        """The runtime's requirements that the product does not already declare itself (with dynamic dependencies)."""
        from importlib.metadata import version as installed

        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name

        from ..checks.project import needs_genai
        from ..requirements import RUNTIME_REQUIREMENTS, genai_requirements

        needed = list(RUNTIME_REQUIREMENTS)
        if needs_genai(plan.models):
            needed += genai_requirements(installed("openvino"))
        declared = {canonicalize_name(Requirement(r).name) for r in self.metadata.core.dependencies}
        return [r for r in needed if canonicalize_name(Requirement(r).name) not in declared]

    def _render(self, plan: Plan, version: str) -> dict[str, str]:
        import os

        from .editable import private_folder, render_editable_loader
        from .writer import render_runtime_folder

        assert self._staging is not None
        folder = self._staging / "_ovcrypt"
        folder.mkdir()
        manifest = render_runtime_folder(plan, folder, os.environ, progress=_terminal_progress())
        if version == "editable" and not plan.new_package:
            # The source tree's package shadows site-packages: install under a private name, found by a finder.
            dest = private_folder(plan.package)
            mapping = render_editable_loader(plan.package, self._staging)
        else:
            dest = f"{plan.package.replace('.', '/')}/_ovcrypt"
            mapping = {}
        # File by file, so hatchling reserves each destination (a stale copy in the tree cannot shadow it).
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                mapping[str(path)] = f"{dest}/{path.relative_to(folder).as_posix()}"
        names = ", ".join(sorted(manifest.models))
        self.app.display_info(f"hatch-ovcrypt: encrypted {names} into {dest} (key id {manifest.key_id})")
        return mapping

    def _check_other_target(self, root: Path, builder: Any) -> None:
        """Configured for every target: an sdist gets no runtime, and must not carry plaintext models."""
        from ..checks.plaintext import check_plaintext_in_sdist
        from ..checks.project import is_from_sdist
        from ..config import ConfigurationError, parse_options

        if self.target_name != "sdist" or is_from_sdist(root):
            return
        options, problems = parse_options(self.config, root, f"tool.hatch.build.hooks.{self.PLUGIN_NAME}")
        if not options.allow_plaintext_sdist:
            problems += check_plaintext_in_sdist(options, root)
        if problems:
            self.app.abort(str(ConfigurationError(problems)))

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        self._cleanup()
        if self._plan is not None:
            self._check_built_wheel(build_data, Path(artifact_path))

    def _check_built_wheel(self, build_data: dict[str, Any], wheel: Path) -> None:
        """Hooks that ran after this one may have added a plaintext model: then remove the wheel and fail."""
        from ..checks.plaintext import check_built_wheel
        from ..config import ConfigurationError

        assert self._plan is not None
        problems = check_built_wheel(self._plan.options, self.build_config.builder, Path(self.root), build_data, wheel)
        if problems:
            wheel.unlink(missing_ok=True)
            self.app.abort(str(ConfigurationError(problems)))

    def _cleanup(self) -> None:
        if self._on_sigterm is not None:
            self._on_sigterm.restore()
            self._on_sigterm = None
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None


_Handler = Callable[[int, FrameType | None], Any] | int | None


class _SigtermCleanup:
    """While the staging folder exists, SIGTERM (what a CI cancel sends) removes it first, then does what the
    previous handler would: call it, or die of SIGTERM as the default does."""

    def __init__(self, folder: Path, previous: _Handler) -> None:
        self.folder = folder
        self.previous = previous

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        if callable(self.previous):
            self.previous(signum, frame)
        elif self.previous != signal.SIG_IGN:  # the default (or a handler set outside Python): die of it
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def restore(self) -> None:
        """Put the previous handler back, if ours is still the one installed."""
        previous = signal.SIG_DFL if self.previous is None else self.previous  # None: set outside Python
        with contextlib.suppress(ValueError):  # not the main thread: nothing was installed
            if signal.getsignal(signal.SIGTERM) is self:
                signal.signal(signal.SIGTERM, previous)


def _remove_on_sigterm(folder: Path) -> _SigtermCleanup | None:
    """Install a SIGTERM handler that removes `folder`; None where signals cannot be handled (another thread)."""
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:  # SIGTERM does not end this process: finalize or atexit will clean up
        return None
    handler = _SigtermCleanup(folder, previous)
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # signal handlers can only be set from the main thread
        return None
    return handler


def _terminal_progress() -> ProgressFactory | None:
    """Progress for big files, on an interactive terminal only."""
    if not sys.stderr.isatty():
        return None
    from .progress import progress_for

    return progress_for
