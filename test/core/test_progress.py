"""Progress of long-running tools: a tqdm bar on a terminal, periodic INFO lines elsewhere."""
from __future__ import annotations

import io
import logging

import pytest

from ilrm_ros.core.progress import Progress, ProgressConfig, format_duration, track

LOGGER = "test.progress"


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def progress_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


def test_headless_logs_a_line_every_quarter_and_a_final_one(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock()
    with Progress(20, "synth", unit="scene", logger=logging.getLogger(LOGGER), stream=io.StringIO(),
                  config=ProgressConfig(every_s=1e9, every_pct=25), clock=clock) as bar:
        for _ in range(20):
            clock.t += 1.0
            bar.update()
    records = progress_lines(caplog)
    assert [r.levelno for r in records] == [logging.INFO] * 4
    messages = [r.getMessage() for r in records]
    assert [m.split(" ")[1] for m in messages[:3]] == ["5/20", "10/20", "15/20"]
    assert messages[0] == "synth: 5/20 scene (25%), 5 s elapsed, ETA 15 s"
    assert messages[-1] == "synth: done, 20/20 scene in 20 s"
    assert not bar.uses_bar


def test_headless_logs_at_least_every_interval_while_items_complete(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock()
    with Progress(1000, "train", unit="step", logger=logging.getLogger(LOGGER), stream=io.StringIO(),
                  config=ProgressConfig(every_s=5.0, every_pct=100), clock=clock) as bar:
        for _ in range(12):
            clock.t += 2.0  # a line after 6 s, 12 s, 18 s, 24 s
            bar.update()
        bar.set_status("loss 0.1")
    messages = [r.getMessage() for r in progress_lines(caplog)]
    assert len(messages) == 5
    assert messages[0].startswith("train: 3/1000 step (0%), 6 s elapsed, ETA 33 min 14 s")
    assert messages[-1] == "train: stopped, 12/1000 step in 24 s; loss 0.1"


def test_track_yields_every_item_and_reports_an_early_stop(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    seen = []
    for item in track(range(10), "eval", unit="scene", logger=logging.getLogger(LOGGER), stream=io.StringIO()):
        seen.append(item)
        if item == 3:
            break
    assert seen == [0, 1, 2, 3]
    assert progress_lines(caplog)[-1].getMessage().startswith("eval: stopped, 3/10 scene in ")


def test_a_terminal_gets_a_tqdm_bar_with_eta_and_no_log_lines(caplog):
    import tqdm  # pinned in requirements.txt: a hard dependency
    caplog.set_level(logging.INFO, logger=LOGGER)
    term = Terminal()
    with Progress(5, "bag", unit="frame", logger=logging.getLogger(LOGGER), stream=term) as bar:
        assert isinstance(bar._bar, tqdm.tqdm)
        for _ in range(5):
            bar.update()
    assert bar.uses_bar
    out = term.getvalue()
    assert "bag: 100%" in out and "5/5" in out and "<00:00" in out  # elapsed<ETA
    assert progress_lines(caplog) == []


@pytest.mark.parametrize("seconds, text", [(4.4, "4 s"), (185, "3 min 05 s"), (3720, "1 h 02 min"),
                                           (float("inf"), "?")])
def test_durations_read_naturally(seconds, text):
    assert format_duration(seconds) == text
