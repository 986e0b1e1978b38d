"""Specification of io.drop_report: counted by reason, named once per cause per window, with a count."""
import logging

from ilrm_ros.io.drop_report import DropReporter


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def reporter():
    lines, clock = [], Clock()
    return DropReporter(lambda level, line: lines.append((level, line)), window_s=5.0, clock=clock), lines, clock


def test_the_first_drop_of_a_cause_is_logged_at_once_with_its_message_and_reason():
    rep, lines, _ = reporter()
    rep.drop("decode_error", "encoding 'yuv422'", "unsupported image encoding 'yuv422'")
    assert lines == [(logging.WARNING, "dropped a frame: unsupported image encoding 'yuv422' [dropped_decode_error]")]
    assert rep.counters.snapshot() == {"dropped_decode_error": 1}


def test_further_drops_of_the_cause_are_summarised_with_the_count_when_the_window_ends():
    rep, lines, clock = reporter()
    for _ in range(23):
        rep.drop("decode_error", "encoding 'yuv422'", "unsupported image encoding 'yuv422'")
        clock.t += 0.1
    assert len(lines) == 1
    clock.t = 5.1
    rep.flush()
    assert lines[-1][1] == "23 frames dropped in the last 5 s [dropped_decode_error]: encoding 'yuv422'"
    assert rep.counters.snapshot()["dropped_decode_error"] == 23
    rep.flush()
    assert len(lines) == 2  # nothing more to say


def test_each_cause_is_named_on_its_own_even_during_a_flood_of_another():
    rep, lines, clock = reporter()
    for _ in range(100):
        rep.drop("decode_error", "encoding 'yuv422'", "unsupported 'yuv422'")
    rep.drop("decode_error", "encoding 'bayer_rggb8'", "unsupported 'bayer_rggb8'")
    rep.drop("bad_camera_info", "absurd focal length", "fx=1e30")
    assert [line for _, line in lines] == ["dropped a frame: unsupported 'yuv422' [dropped_decode_error]",
                                           "dropped a frame: unsupported 'bayer_rggb8' [dropped_decode_error]",
                                           "dropped a frame: fx=1e30 [dropped_bad_camera_info]"]


def test_a_cause_is_logged_again_after_its_window_and_a_single_event_has_no_summary():
    rep, lines, clock = reporter()
    rep.drop("tf_timeout", "no TF map <- cam", "no TF")
    clock.t = 6.0
    rep.drop("tf_timeout", "no TF map <- cam", "no TF again")
    assert [line for _, line in lines] == ["dropped a frame: no TF [dropped_tf_timeout]",
                                           "dropped a frame: no TF again [dropped_tf_timeout]"]


def test_transforms_warnings_and_internal_errors_have_their_own_keys():
    rep, lines, _ = reporter()
    rep.tf_rejected("loop", "loop 'map'", "base_link -> map would close a loop")
    rep.warn("distortion_ignored", "distortion on a raw image topic", "camera_info has distortion")
    rep.event("dropped_internal_error", "image callback: KeyError", "boom", level=logging.ERROR)
    assert rep.counters.snapshot() == {"tf_rejected_loop": 1, "warned_distortion_ignored": 1,
                                       "dropped_internal_error": 1}
    assert lines[-1][0] == logging.ERROR and rep.counters.total("dropped_") == 1
