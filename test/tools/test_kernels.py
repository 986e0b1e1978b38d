"""`ilrm-ros kernels` checks (or builds) every compiled CPU library of the package."""
import shutil

import pytest

from ilrm_ros.tools import kernels


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler: make setup could not build them")
def test_both_libraries_are_reported_loaded(capsys):
    assert kernels.cli_main([]) == 0
    out = capsys.readouterr().out
    assert "CPU rasterizer kernels: loaded from" in out and "model's CPU kernels: loaded from" in out


def test_an_unknown_argument_is_refused(capsys):
    assert kernels.cli_main(["--bogus"]) == 2 and "usage" in capsys.readouterr().out
