"""The last-resort callback guard: an exception never reaches the executor.

Unit level (any callable) and over DDS (a subscription callback that raises keeps the
executor spinning, the error is counted as internal_error and its traceback logged once).
"""
from __future__ import annotations

import threading
import time

import pytest

from ilrm_ros.io.drop_report import DropReporter
from ilrm_ros.ros.guard import CallbackGuard, failed_response


def make_guard():
    lines, tracebacks = [], []
    reporter = DropReporter(lambda level, line: lines.append(line))
    return CallbackGuard(reporter, tracebacks.append), reporter, lines, tracebacks


def test_an_exception_is_counted_logged_once_with_its_traceback_and_swallowed():
    guard, reporter, lines, tracebacks = make_guard()

    @guard("the image callback")
    def callback(x):
        return 10 // x

    assert callback(2) == 5
    assert callback(0) is None and callback(0) is None
    assert reporter.counters.snapshot()["dropped_internal_error"] == 2
    assert len(tracebacks) == 1 and "the image callback" in tracebacks[0] and "ZeroDivisionError" in tracebacks[0]
    assert any("[dropped_internal_error]" in line for line in lines)


def test_a_service_gets_a_failure_response_instead_of_an_exception():
    guard, *_ = make_guard()

    class Resp:
        success, message = True, ""

    handler = guard("a service", failed_response)(lambda req, resp: 1 / 0)
    resp = handler(object(), Resp())
    assert resp.success is False and "ZeroDivisionError" in resp.message


def test_the_wrapped_callback_keeps_its_signature_so_rclpy_still_passes_message_info():
    import inspect

    guard, *_ = make_guard()
    wrapped = guard("x")(lambda msg, info: None)
    with pytest.raises(TypeError):
        inspect.signature(wrapped).bind(object())
    inspect.signature(wrapped).bind(object(), object())


@pytest.mark.ros
def test_over_dds_a_raising_callback_does_not_stop_the_executor():
    rclpy = pytest.importorskip("rclpy")
    from rclpy.executors import MultiThreadedExecutor
    from std_msgs.msg import Int32

    rclpy.init()
    node, user = rclpy.create_node("guard_under_test"), rclpy.create_node("guard_user")
    guard, reporter, _, tracebacks = make_guard()
    received = []

    def on_msg(msg):
        if msg.data % 2:
            raise RuntimeError(f"odd {msg.data}")
        received.append(msg.data)

    node.create_subscription(Int32, "/guard_test", guard("the Int32 callback")(on_msg), 10)
    pub = user.create_publisher(Int32, "/guard_test", 10)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    executor.add_node(user)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        for i in range(6):
            pub.publish(Int32(data=i))
            time.sleep(0.05)
        deadline = time.monotonic() + 10
        while len(received) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert received == [0, 2, 4] and thread.is_alive()
        assert reporter.counters.snapshot()["dropped_internal_error"] == 3 and len(tracebacks) == 1
    finally:
        executor.shutdown()
        node.destroy_node()
        user.destroy_node()
        rclpy.shutdown()
