"""`ilrm-ros demo` stops at once, naming the node's log and its last lines, when the node
cannot start (instead of waiting two minutes for subscribers that never come)."""
import time

import pytest

pytest.importorskip("rclpy")

from ilrm_ros.tools.demo import DemoConfig, cli_main, run_demo  # noqa: E402

pytestmark = [pytest.mark.ros]


def test_a_node_that_cannot_start_fails_the_demo_fast_with_its_fatal_line(tmp_path, capsys):
    t0 = time.monotonic()
    with pytest.raises(RuntimeError) as err:
        run_demo(tmp_path / "demo", DemoConfig(frames=8, res=64, params=["model.architecture:=nonsense"]))
    assert time.monotonic() - t0 < 60.0
    msg = str(err.value)
    assert "exited with code 2" in msg and "node.log" in msg and "'nonsense'" in msg
    assert cli_main(["--out", str(tmp_path / "cli"), "--frames", "8", "--res", "64",
                     "-p", "model.architecture:=nonsense"]) == 1
    assert "[demo] failed: the node exited with code 2" in capsys.readouterr().err
