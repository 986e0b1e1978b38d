"""Specification of mapping.delivery: images lost before they reached the node, inferred."""
from ilrm_ros.mapping.delivery import DeliveryTracker

PERIOD = 33_333_333  # 30 Hz


def test_publication_sequence_numbers_give_the_exact_loss():
    t = DeliveryTracker()
    for seq in (1, 2, 3, 7, 8, 10):
        t.observe(seq * PERIOD, seq)
    s = t.snapshot()
    assert (s["received"], s["lost"], s["source"]) == (6, 4, "publication_sequence")
    assert abs(s["delivery_ratio"] - 0.6) < 1e-12


def test_a_restarted_or_second_writer_is_not_counted_as_loss():
    t = DeliveryTracker()
    for seq in (1, 2, 3, 1, 2):
        t.observe(seq * PERIOD, seq)
    assert t.snapshot()["lost"] == 0


def test_without_sequence_numbers_gaps_in_the_stamps_estimate_the_loss():
    t = DeliveryTracker()
    stamps = [i * PERIOD for i in range(40) if i not in (10, 11, 12, 25)]
    for stamp in stamps:
        t.observe(stamp)
    s = t.snapshot()
    assert (s["received"], s["lost"], s["source"]) == (36, 4, "stamp_gaps")


def test_a_long_pause_of_the_camera_is_not_loss_and_too_few_images_say_unknown():
    t = DeliveryTracker(max_gap_periods=100)
    for i in range(20):
        t.observe(i * PERIOD)
    t.observe(19 * PERIOD + 1000 * PERIOD)  # the camera paused for 33 s
    assert t.snapshot()["lost"] == 0
    few = DeliveryTracker()
    few.observe(0)
    few.observe(PERIOD)
    assert few.snapshot()["source"] == "unknown" and few.snapshot()["lost"] == 0
