"""The package's C libraries (core/clib.py): built with the system compiler, loaded with ctypes, and a library
that is missing, out of date or broken says so instead of failing the import."""
import ctypes
import shutil

import pytest

from ilrm_ros.core.clib import CLibrary, LoadedLibrary, build_library, library_path

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")


def declare_answer(lib: ctypes.CDLL) -> None:
    lib.answer.restype = ctypes.c_int
    lib.answer.argtypes = []


def library(tmp_path, source: str, declare=declare_answer) -> CLibrary:
    src = tmp_path / "lib.c"
    src.write_text(source)
    return CLibrary("test library", (src,), tmp_path / "out" / "libtest.so", "ILRM_ROS_TEST_LIB", declare)


def test_a_built_library_loads_and_answers(tmp_path, monkeypatch):
    monkeypatch.delenv("ILRM_ROS_TEST_LIB", raising=False)
    spec = library(tmp_path, "int answer(void) { return 42; }\n")
    loaded = LoadedLibrary(spec)
    assert "not built" in loaded.status() and loaded.load() is None
    assert loaded.build() == spec.path and spec.path.is_file()
    assert loaded.reload() == "" and loaded.load().answer() == 42


def test_the_environment_variable_points_elsewhere(tmp_path, monkeypatch):
    spec = library(tmp_path, "int answer(void) { return 7; }\n")
    other = build_library(spec, tmp_path / "elsewhere.so")
    monkeypatch.setenv("ILRM_ROS_TEST_LIB", str(other))
    assert library_path(spec) == other and LoadedLibrary(spec).load().answer() == 7


def test_a_library_without_a_declared_symbol_is_out_of_date(tmp_path, monkeypatch):
    monkeypatch.delenv("ILRM_ROS_TEST_LIB", raising=False)
    spec = library(tmp_path, "int other(void) { return 1; }\n")
    build_library(spec)
    loaded = LoadedLibrary(spec)
    assert loaded.load() is None and "out of date" in loaded.status()


def test_a_compile_error_is_raised_with_the_compilers_message(tmp_path):
    spec = library(tmp_path, "int answer(void) { return undeclared_name; }\n")
    with pytest.raises(RuntimeError, match="undeclared_name"):
        build_library(spec)
    assert not spec.path.exists()        # nothing half-written where the loader looks


def test_the_cli_builds_then_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ILRM_ROS_TEST_LIB", raising=False)
    loaded = LoadedLibrary(library(tmp_path, "int answer(void) { return 1; }\n"))
    assert loaded.cli([]) == 1 and "not built" in capsys.readouterr().out
    assert loaded.cli(["--build"]) == 0
    assert loaded.cli([]) == 0 and "loaded from" in capsys.readouterr().out
