"""Build script: setuptools drives CMake to build the private extension ``masc_fast._C``.

Metadata lives in pyproject.toml; this file only declares packages and the extension.
Follows pybind11's cmake_example.

Environment switches
--------------------
MASC_FAST_BUILD_EXT=auto|1|0
    auto (default): try to build ``_C``; if CMake fails, warn and install pure Python.
    1: a build failure is fatal (CI). 0: do not build the extension at all.
DEBUG=1
    Debug build instead of Release.
CMAKE_ARGS, CMAKE_BUILD_PARALLEL_LEVEL, CMAKE_GENERATOR
    Passed through to CMake.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

# Imported after setuptools so that `distutils` resolves to setuptools' vendored copy.
from distutils.errors import CompileError  # noqa: E402  isort: skip

ROOT = Path(__file__).parent.resolve()


def _version() -> str:
    text = (ROOT / "masc_fast" / "_version.py").read_text(encoding="utf-8")
    match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    if match is None:
        raise RuntimeError("masc_fast/_version.py does not define __version__")
    return match.group(1)


def _build_mode() -> str:
    mode = os.environ.get("MASC_FAST_BUILD_EXT", "auto").strip().lower() or "auto"
    if mode not in {"auto", "1", "0"}:
        raise ValueError(f"MASC_FAST_BUILD_EXT must be one of auto, 1, 0; got {mode!r}")
    return mode


class CMakeExtension(Extension):
    """An extension built by CMake from ``sourcedir`` (which holds CMakeLists.txt)."""

    def __init__(self, name: str, sourcedir: str = "", **kwargs) -> None:
        super().__init__(name, sources=[], **kwargs)
        self.sourcedir = os.fspath((ROOT / sourcedir).resolve())


def _cmake_executable() -> str:
    # The `cmake` wheel (a build requirement) may not be on PATH when its bin dir is not.
    try:
        import cmake

        candidate = Path(cmake.CMAKE_BIN_DIR) / "cmake"
        if candidate.exists() or candidate.with_suffix(".exe").exists():
            return os.fspath(candidate)
    except (ImportError, AttributeError):
        pass
    return "cmake"


def _ninja_args() -> list[str]:
    try:
        import ninja

        executable = os.fspath(Path(ninja.BIN_DIR) / "ninja")
    except ImportError:
        executable = shutil.which("ninja")
    if executable is None:
        return []
    return ["-GNinja", f"-DCMAKE_MAKE_PROGRAM:FILEPATH={executable}"]


class CMakeBuild(build_ext):
    """Configure and build CMakeLists.txt; the module lands where setuptools expects it."""

    def build_extension(self, ext: Extension) -> None:
        if not isinstance(ext, CMakeExtension):
            super().build_extension(ext)
            return
        try:
            self._build_cmake(ext)
        except (OSError, subprocess.CalledProcessError) as exc:
            # CompileError is what setuptools skips (with a warning) for optional extensions.
            raise CompileError(f"CMake build of {ext.name} failed: {exc}") from exc

    def _build_cmake(self, ext: CMakeExtension) -> None:
        # get_ext_fullpath points into build_lib; setuptools copies it into the source
        # tree for editable installs, so one code path serves both.
        ext_fullpath = Path.cwd() / self.get_ext_fullpath(ext.name)
        extdir = ext_fullpath.parent.resolve()
        debug = self.debug or os.environ.get("DEBUG", "0") == "1"
        config = "Debug" if debug else "Release"

        cmake_args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}{os.sep}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY_{config.upper()}={extdir}{os.sep}",
            f"-DCMAKE_BUILD_TYPE={config}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DPYTHON_EXECUTABLE={sys.executable}",
            "-DPYBIND11_FINDPYTHON=ON",
            f"-Dpybind11_DIR={self._pybind11_cmake_dir()}",
            f"-DMASC_FAST_VERSION={_version()}",
        ]
        if "CMAKE_ARGS" in os.environ:
            cmake_args += shlex.split(os.environ["CMAKE_ARGS"])
        if not os.environ.get("CMAKE_GENERATOR") and sys.platform != "win32":
            cmake_args += _ninja_args()

        build_args = ["--config", config]
        if "CMAKE_BUILD_PARALLEL_LEVEL" not in os.environ and getattr(self, "parallel", None):
            build_args += [f"-j{self.parallel}"]

        build_temp = Path(self.build_temp) / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        cmake = _cmake_executable()
        subprocess.run([cmake, ext.sourcedir, *cmake_args], cwd=build_temp, check=True)
        subprocess.run([cmake, "--build", ".", *build_args], cwd=build_temp, check=True)

    @staticmethod
    def _pybind11_cmake_dir() -> str:
        try:
            import pybind11
        except ImportError as exc:
            raise OSError(f"pybind11 is required to build masc_fast._C: {exc}") from exc
        return pybind11.get_cmake_dir()


_MODE = _build_mode()
ext_modules = (
    []
    if _MODE == "0"
    else [CMakeExtension("masc_fast._C", sourcedir=".", optional=_MODE == "auto")]
)

setup(
    packages=[*find_packages(include=["masc_fast", "masc_fast.*"]), "masc_fast.kernels"],
    package_dir={"masc_fast.kernels": "kernels"},
    # The authors' reference numbers (`masc-fast verify-reference`) and the example sweep grids.
    package_data={
        "masc_fast.pipeline.experiments": ["reference_data/*.csv"],
        "masc_fast.pipeline.sweeps": ["grids/*.toml"],
    },
    ext_modules=ext_modules,
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
