"""Hostile input without DDS: the input stage, the TF buffer and map files (ROS-free core), and
the node's render-request and parameter-set handlers called directly (ros/services.py,
ros/parameters.py; no rclpy spin), in front of a real Mapper (tiny untrained model).

For every category of test/hostile_cases.py it checks: nothing escapes but the typed
rejection (alive), the rejection carries the expected reason and is counted under it, a
log line (or message) names it, the map is unchanged, and mapping resumes with valid input
right after. A summary table is printed at the end.
"""
from __future__ import annotations

import collections
import copy
import logging
from types import SimpleNamespace

import numpy as np
import pytest

import hostile_cases as hc
from ilrm_ros.mapping.config import MappingConfig, config_from_flat
from ilrm_ros.io.drop_report import DropReporter
from ilrm_ros.io.frames import ns_to_stamp
from ilrm_ros.io.input_stage import InputLimits, InputRejected, InputStage, place
from ilrm_ros.mapping.mapper import Mapper
from ilrm_ros.io.pose_buffer import PoseBuffer, TransformRejected
from ilrm_ros.io.rigid import make_transform
from ilrm_ros.model.ilrm import ILRM, load_model_config

S = 1_000_000_000
NOW = 2_000 * S  # the buffer's clock in this suite
COLUMNS = ("cases", "alive", "counted", "named", "map kept", "resumed")
RESULTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def header(frame_id: str, stamp_ns: int) -> SimpleNamespace:
    sec, nanosec = ns_to_stamp(stamp_ns)
    return SimpleNamespace(frame_id=frame_id, stamp=SimpleNamespace(sec=sec, nanosec=nanosec))


def image_msg(payload: dict, stamp_ns: int) -> SimpleNamespace:
    fields = {k: v for k, v in payload.items() if k != "frame_id"}
    return SimpleNamespace(header=header(payload["frame_id"], stamp_ns), **fields)


def info_msg(info: dict) -> SimpleNamespace:
    roi = SimpleNamespace(x_offset=0, y_offset=0, width=info["roi_width"], height=info["roi_width"])
    return SimpleNamespace(k=info["k"], width=info["width"], height=info["height"], d=info["d"],
                           binning_x=info["binning"], binning_y=info["binning"], roi=roi, p=[])


class Pipeline:
    """Input stage -> TF buffer -> place -> Mapper, as the node wires them, without ROS."""

    def __init__(self) -> None:
        self.cfg = config_from_flat({"model.height": hc.RES, "model.width": hc.RES, "window.size": 4,
                                     "window.stride": 2, "keyframes.min_translation_m": 0.0,
                                     "keyframes.min_rotation_deg": 0.0, "model.device": "cpu"})
        self.mapper = Mapper(self.cfg, model=ILRM(load_model_config("tiny")))
        self.lines: list[str] = []
        self.reporter = DropReporter(lambda level, line: self.lines.append(line), window_s=5.0)
        self.stage = InputStage(InputLimits(max_pixels=33_554_432, max_decoded_bytes=268_435_456))
        self.valid_info = info_msg(hc.camera_info())
        self.stage.set_camera_info(self.valid_info)
        self.buffer = PoseBuffer(cache_time_s=10.0, max_future_s=10.0)
        self.buffer.set_transform("base_link", "camera_link", 0, [0.1, 0, 0.3], [0, 0, 0, 1], static=True)
        self.buffer.set_transform("camera_link", hc.CAMERA_FRAME, 0, [0, 0, 0], [-0.5, 0.5, -0.5, 0.5], static=True)
        self.buffer.set_transform("map", "odom", 0, [0, 0, 0], [0, 0, 0, 1], static=True)
        self.t = NOW - 500 * S
        self.i = 0

    def valid_frame(self) -> bool:
        """One valid TF + image through every stage; True when a window was processed."""
        self.i += 1
        self.t += S // 5
        pose = [0.05 * self.i, 0.02 * np.sin(self.i), 0.0]
        for dt in (-S // 1000, S // 1000):
            self.buffer.set_transform("odom", "base_link", self.t + dt, pose, [0, 0, 0, 1], now_ns=NOW)
        msg = image_msg(hc.raw("rgb8", hc.RES, hc.RES, 3 * hc.RES, hc.valid_rgb(self.i).tobytes()), self.t)
        frame, _ = self.stage.frame(msg, compressed=False)
        place(frame, self.buffer.lookup("map", frame.frame_id, frame.stamp_ns))
        window = self.mapper.add_frame(frame)
        if window is not None:
            self.mapper.process_window(window)
            return True
        return False

    def resumes(self) -> bool:
        before = self.mapper.num_windows
        for _ in range(4):
            self.valid_frame()
        return self.mapper.num_windows >= before + 1 and self.mapper.stats()["num_gaussians"] > 0

    def map_state(self) -> tuple:
        s = self.mapper.stats()
        return id(self.mapper.map), s["num_gaussians"], s.get("revision"), self.mapper.num_windows


@pytest.fixture(scope="module")
def pipe():
    p = Pipeline()
    assert p.resumes(), "the pipeline must map valid input before the hostile cases"
    return p


def record(category: str, **checks: bool) -> None:
    row = RESULTS[category]
    row["cases"] += 1
    for name, ok in checks.items():
        row[name] += int(bool(ok))


def run_category(pipe: Pipeline, category: str, cases: list, apply) -> None:
    """Apply every case; each ``apply(case) -> (counted, named)``; then check the map and resumption."""
    assert cases, category
    before = pipe.map_state()
    for case in cases:
        try:
            counted, named = apply(case)
            alive = True
        except Exception as exc:  # noqa: BLE001 - an escaping exception is exactly what this suite looks for
            alive, counted, named = False, False, False
            print(f"{category} / {case.name}: {type(exc).__name__}: {exc}")
        record(category, alive=alive, counted=counted, named=named, **{"map kept": pipe.map_state() == before})
    resumed = pipe.resumes()
    RESULTS[category]["resumed"] += len(cases) if resumed else 0
    row = RESULTS[category]
    assert all(row[c] == row["cases"] for c in COLUMNS), f"{category}: {dict(row)}"


def _drop_checked(pipe: Pipeline, exc: InputRejected, case) -> tuple[bool, bool]:
    rej = exc.rejection
    key = f"dropped_{rej.reason}"
    before = pipe.reporter.counters.snapshot().get(key, 0)
    n_lines = len(pipe.lines)
    pipe.reporter.drop(rej.reason, rej.cause, rej.message)
    counted = rej.reason == case.expect and pipe.reporter.counters.snapshot()[key] == before + 1
    # one line per cause and window: this event's, or the one that opened its cause's window
    named = bool(rej.cause and rej.message) and any(f"[{key}]" in line for line in pipe.lines[n_lines:] or pipe.lines)
    return counted, named


def _image_case(pipe: Pipeline, case) -> tuple[bool, bool]:
    pipe.t += S // 100
    msg = image_msg(case.payload, pipe.t)
    try:
        pipe.stage.frame(msg, compressed=bool(case.extra.get("compressed")))
    except InputRejected as exc:
        return _drop_checked(pipe, exc, case)
    return False, False


@pytest.mark.parametrize("category, cases", [
    ("image encoding", hc.encoding_cases()), ("image layout", hc.geometry_cases()),
    ("image size", hc.size_cases()), ("compressed garbage", hc.compressed_cases()),
    ("frame id", hc.frame_id_cases())])
def test_hostile_images_are_dropped_by_reason_and_named(pipe, category, cases):
    run_category(pipe, category, cases, lambda case: _image_case(pipe, case))


def test_hostile_camera_info_is_dropped_or_named(pipe):
    def apply(case):
        pipe.stage.set_camera_info(info_msg(case.payload))
        pipe.t += S // 100
        msg = image_msg(hc.raw("rgb8", hc.RES, hc.RES, 3 * hc.RES, hc.valid_rgb().tobytes()), pipe.t)
        try:
            _, notes = pipe.stage.frame(msg, compressed=False)
        except InputRejected as exc:
            return _drop_checked(pipe, exc, case)
        finally:
            pipe.stage.set_camera_info(pipe.valid_info)
        if case.expect is not None:
            return False, False
        for note in notes:
            pipe.reporter.warn(note.key, note.cause, note.message)
        return True, any(n.key == case.note for n in notes) and any(f"[warned_{case.note}]" in line
                                                                     for line in pipe.lines)

    run_category(pipe, "camera_info", hc.camera_info_cases(), apply)


def test_unusable_poses_are_dropped(pipe):
    def apply(case):
        frame, _ = pipe.stage.frame(image_msg(hc.raw("rgb8", hc.RES, hc.RES, 3 * hc.RES, hc.valid_rgb().tobytes()),
                                              pipe.t), compressed=False)
        try:
            place(frame, case.payload["T"])
        except InputRejected as exc:
            return _drop_checked(pipe, exc, case)
        return False, False

    run_category(pipe, "poses", hc.pose_cases(), apply)


def test_hostile_transforms_are_refused_by_name_or_handled_as_tf2_and_the_tree_recovers(pipe):
    def apply(case):
        p = case.payload
        stamp = p.get("stamp_ns", pipe.t)
        try:
            pipe.buffer.set_transform(p["parent"], p["child"], stamp, p["t"], p["q"], now_ns=NOW)
        except TransformRejected as exc:
            n = len(pipe.lines)
            pipe.reporter.tf_rejected(exc.reason, f"{exc.reason} {p['child']!r}", str(exc))
            named = any(f"[tf_rejected_{exc.reason}]" in line for line in pipe.lines[n:] or pipe.lines)
            return exc.reason == case.expect, named
        if case.expect is not None:
            return False, False
        # accepted (re-parenting): the tree still answers, and the next valid samples restore the pose
        return pipe.buffer.try_lookup("map", hc.CAMERA_FRAME, stamp) is not None, True

    run_category(pipe, "tf", hc.tf_cases(NOW), apply)


def test_bad_map_files_are_refused_with_a_message_and_the_map_is_kept(pipe, tmp_path):
    def apply(case):
        if "bytes" in case.payload:
            path = tmp_path / f"{abs(hash(case.name))}.ply"
            path.write_bytes(case.payload["bytes"])
        else:
            path = tmp_path / case.payload["path"]
        try:
            pipe.mapper.load(path)
        except (ValueError, OSError) as exc:
            return True, str(path.name) in str(exc) or "no such" in str(exc).lower() or "directory" in str(exc)
        return False, False

    run_category(pipe, "map files", hc.map_file_cases(), apply)


def test_bad_render_requests_are_refused(pipe):
    from ilrm_ros.ros.services import render_camera, render_pose

    def apply(case):
        p = case.payload
        try:
            render_camera(p["width"], p["height"], p["k"], pipe.cfg.render.max_render_pixels)
            render_pose(None, SimpleNamespace(x=p["t"][0], y=p["t"][1], z=p["t"][2]),
                        SimpleNamespace(x=p["q"][0], y=p["q"][1], z=p["q"][2], w=p["q"][3]))
        except ValueError as exc:
            return True, bool(str(exc))
        return False, False

    run_category(pipe, "render requests", hc.render_cases(), apply)


def test_rejected_parameter_sets_change_nothing(pipe):
    from ilrm_ros.ros.parameters import ParameterGate

    committed = []

    def prepare(candidate: MappingConfig):
        candidate.keyframes.validate()
        return lambda: committed.append(True)

    gate = ParameterGate(pipe.cfg, prepare)

    def apply(case):
        before, policy = copy.deepcopy(pipe.cfg), pipe.mapper.policy.config
        reason = gate.check(case.payload["values"])
        unchanged = pipe.cfg == before and pipe.mapper.policy.config == policy and not committed
        named = reason is not None and any(name in reason for name in case.payload["values"])
        return reason is not None and unchanged, named

    run_category(pipe, "parameters", hc.parameter_cases(), apply)


def test_zz_print_the_summary_table(capsys):
    """Runs last in this module: the per-category table (also a check that every category ran)."""
    assert len(RESULTS) >= 11 and sum(r["cases"] for r in RESULTS.values()) >= 190
    lines = [f"{'ROS-free core':<22}" + "".join(f"{c:>10}" for c in COLUMNS)]
    for category, row in RESULTS.items():
        lines.append(f"{category:<22}" + "".join(f"{row[c]:>10}" for c in COLUMNS))
    total = collections.Counter()
    for row in RESULTS.values():
        total.update(row)
    lines.append(f"{'total':<22}" + "".join(f"{total[c]:>10}" for c in COLUMNS))
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    logging.getLogger(__name__).info("\n".join(lines))
