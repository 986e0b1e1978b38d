"""Camera trajectories inside a scene: ground robot, handheld/drone 6-DoF, closed loop.

World frame z up (REP 103). Poses are OpenCV camera-to-world ``(N, 4, 4)`` float64 and
times are seconds from the first frame ``(N,)``. Each generator is given a *clearance*
function (distance from points to the nearest surface, positive in free space) and
keeps every camera (and, for ground robots, the column below it) at least
``cfg.clearance`` metres from any surface. Generators raise :class:`TrajectoryError`
when they cannot find a valid path; the caller draws a new scene.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .path_geometry import (
    ClearanceFn,
    body_to_camera_c2w,
    catmull_rom,
    column_clearance,
    frame_times,
    path_length,
    resample_by_arclength,
    smooth_wave,
    yaw_along,
)

TRAJECTORY_KINDS = ("ground", "handheld", "loop")


class TrajectoryError(RuntimeError):
    """No valid trajectory was found in this scene."""


@dataclass
class TrajectoryConfig:
    """Motion parameters (ranges are sampled uniformly per trajectory)."""

    num_frames: int = 24
    frame_dt: float = 0.25
    """Seconds between frames (keyframe-like spacing; 0.25 s -> 4 Hz)."""
    clearance: float = 0.4
    """Minimum distance (m) from the camera (and a ground robot's column) to any surface."""
    ground_height: tuple[float, float] = (0.2, 1.5)
    ground_speed: tuple[float, float] = (0.3, 1.0)
    max_yaw_rate: float = 0.8
    """rad/s, ground robot and loop."""
    max_pitch_deg: float = 8.0
    handheld_height: tuple[float, float] = (0.5, 2.0)
    handheld_speed: tuple[float, float] = (0.3, 0.8)
    handheld_look_deg: float = 45.0
    """Amplitude of yaw look-around relative to the direction of travel."""
    handheld_roll_deg: float = 8.0
    loop_overlap: float = 0.0
    """Extra fraction of the loop driven after returning to the start (0 = last pose == first)."""
    max_tries: int = 20


# --------------------------------------------------------------------------- ground robot
def ground_trajectory(
    rng: np.random.Generator,
    walls_clearance: ClearanceFn,
    bounds: tuple[np.ndarray, np.ndarray],
    cfg: TrajectoryConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """A differential-drive robot wandering forward and turning around obstacles.

    ``walls_clearance`` ignores floor and ceiling; ``bounds`` = (lo, hi) of the room.
    A local planner picks, every sub-step, the yaw rate (within ``max_yaw_rate`` and an
    angular acceleration limit) whose 1.5 s look-ahead arc stays clear and is closest to
    a slowly wandering preferred rate; with no clear arc it stops and turns in place.
    Returns ``c2w`` (N, 4, 4) and times (N,) seconds.
    """
    lo, hi = bounds
    h = rng.uniform(*cfg.ground_height)
    h = min(h, hi[2] - lo[2] - 0.4)
    v_nom = rng.uniform(*cfg.ground_speed)
    need = cfg.clearance + 0.05
    # start: a random free spot with some room around it
    cand = rng.uniform(lo[:2] + need, hi[:2] - need, size=(256, 2))
    clr = column_clearance(walls_clearance, cand, h)
    ok = np.nonzero(clr > need + 0.2)[0]
    if ok.size == 0:
        raise TrajectoryError("no free start position for a ground robot")
    xy = cand[rng.choice(ok)].copy()
    # initial heading: favour open directions
    yaws = np.linspace(-np.pi, np.pi, 16, endpoint=False)
    free = np.array([_free_run(walls_clearance, xy, y, h, need) for y in yaws])
    prob = free**2 + 1e-6
    yaw = float(yaws[rng.choice(len(yaws), p=prob / prob.sum())] + rng.uniform(-0.2, 0.2))

    sub = 4
    dt = cfg.frame_dt / sub
    steps = (cfg.num_frames - 1) * sub
    omega, omega_pref, v = 0.0, 0.0, v_nom
    alpha_max = 2.0  # rad/s^2
    cands = np.linspace(-cfg.max_yaw_rate, cfg.max_yaw_rate, 9)
    horizon = np.linspace(0.3, 3.0, 10)  # seconds ahead; the first 1.5 s must be clear
    near = horizon <= 1.5
    spin_dir = 0.0
    xs, ys, yaw_list = [xy[0]], [xy[1]], [yaw]
    for _ in range(steps):
        omega_pref += -omega_pref * dt / 2.0 + 0.6 * math.sqrt(dt) * rng.standard_normal()
        omega_pref = float(np.clip(omega_pref, -cfg.max_yaw_rate, cfg.max_yaw_rate))
        reach = np.clip(cands, omega - alpha_max * dt * 4, omega + alpha_max * dt * 4)
        # look-ahead arcs at nominal speed for every candidate rate: (9, 10) points
        ang = yaw + reach[:, None] * np.minimum(horizon, 1.5)[None, :]
        step_len = v_nom * (horizon[1] - horizon[0])
        px = xy[0] + v_nom * horizon[0] * np.cos(yaw) + np.cumsum(np.cos(ang) * step_len, axis=1)
        py = xy[1] + v_nom * horizon[0] * np.sin(yaw) + np.cumsum(np.sin(ang) * step_len, axis=1)
        clr = column_clearance(walls_clearance, np.column_stack([px.ravel(), py.ravel()]), h).reshape(px.shape)
        min_near = clr[:, near].min(axis=1)
        min_far = clr.min(axis=1)
        safe = min_near > need
        if safe.any():
            # follow the wandering preference, but favour arcs that stay open further ahead
            score = -np.abs(reach - omega_pref) + 0.8 * np.minimum(min_far, 1.5) + 10.0 * safe
            target = float(reach[int(np.argmax(score))])
            v_target = v_nom * (1.0 - 0.5 * abs(target) / cfg.max_yaw_rate)
            spin_dir = 0.0
        else:  # stop and turn in place towards the more open side
            if spin_dir == 0.0:
                spin_dir = 1.0 if min_far[-1] >= min_far[0] else -1.0
            target = spin_dir * cfg.max_yaw_rate
            v_target = 0.0
        omega += float(np.clip(target - omega, -alpha_max * dt, alpha_max * dt))
        v += float(np.clip(v_target - v, -1.0 * dt, 1.0 * dt))
        step_xy = xy + v * dt * np.array([math.cos(yaw + 0.5 * omega * dt), math.sin(yaw + 0.5 * omega * dt)])
        if column_clearance(walls_clearance, step_xy[None], h)[0] > cfg.clearance:
            xy = step_xy
        else:
            v = 0.0
        yaw += omega * dt
        xs.append(xy[0])
        ys.append(xy[1])
        yaw_list.append(yaw)
    idx = np.arange(0, steps + 1, sub)
    pos = np.column_stack([np.asarray(xs)[idx], np.asarray(ys)[idx]])
    yaw_f = np.asarray(yaw_list)[idx]
    times = frame_times(cfg.num_frames, cfg.frame_dt)
    pitch0 = math.radians(rng.uniform(-0.5, 1.0) * cfg.max_pitch_deg)  # mostly level/slightly down
    pitch = pitch0 + smooth_wave(rng, times, math.radians(1.5), (0.1, 0.4))
    pitch = np.clip(pitch, -math.radians(cfg.max_pitch_deg), math.radians(cfg.max_pitch_deg))
    roll = smooth_wave(rng, times, math.radians(1.0), (0.2, 0.6))
    z = h + smooth_wave(rng, times, 0.005, (0.5, 1.5))
    c2w = np.stack([
        body_to_camera_c2w(np.array([pos[i, 0], pos[i, 1], lo[2] + z[i]]), yaw_f[i], pitch[i], roll[i])
        for i in range(cfg.num_frames)
    ])
    if np.ptp(pos[:, 0]) + np.ptp(pos[:, 1]) < 0.05 and np.ptp(yaw_f) < 0.05:
        raise TrajectoryError("ground robot did not move")
    return c2w, times


def _free_run(walls_clearance: ClearanceFn, xy: np.ndarray, yaw: float, h: float, need: float,
              max_dist: float = 5.0) -> float:
    """Distance (m) a robot at ``xy`` can drive straight along ``yaw`` keeping ``need`` clearance."""
    d = np.arange(0.1, max_dist, 0.1)
    pts = xy[None, :] + d[:, None] * np.array([math.cos(yaw), math.sin(yaw)])[None, :]
    bad = np.nonzero(column_clearance(walls_clearance, pts, h) <= need)[0]
    return float(d[bad[0]] if bad.size else max_dist)


# --------------------------------------------------------------------------- handheld / drone
def _segment_clear(clearance: ClearanceFn, a: np.ndarray, b: np.ndarray, need: float) -> bool:
    s = np.linspace(0.0, 1.0, max(2, int(np.linalg.norm(b - a) / 0.1) + 2))
    return bool(np.all(clearance(a[None] + s[:, None] * (b - a)[None]) > need))


def handheld_trajectory(
    rng: np.random.Generator,
    clearance: ClearanceFn,
    bounds: tuple[np.ndarray, np.ndarray],
    cfg: TrajectoryConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth 6-DoF path (handheld camera / small drone): Catmull-Rom through random
    mutually visible waypoints, constant speed, looking roughly along the motion with a
    slow look-around in yaw and pitch and a little roll."""
    lo, hi = bounds
    need = cfg.clearance + 0.05
    v = rng.uniform(*cfg.handheld_speed)
    length_needed = v * (cfg.num_frames - 1) * cfg.frame_dt
    zlo = lo[2] + max(cfg.handheld_height[0], need)
    zhi = min(lo[2] + cfg.handheld_height[1], hi[2] - need - 0.1)
    if zhi <= zlo:
        raise TrajectoryError("room too low for a handheld trajectory")
    for _ in range(cfg.max_tries):
        cand = np.column_stack([
            rng.uniform(lo[0] + need, hi[0] - need, 128),
            rng.uniform(lo[1] + need, hi[1] - need, 128),
            rng.uniform(zlo, zhi, 128),
        ])
        ok = np.nonzero(clearance(cand) > need + 0.15)[0]
        if ok.size == 0:
            continue
        way = [cand[rng.choice(ok)]]
        total = 0.0
        heading = rng.uniform(-np.pi, np.pi)
        while total < 1.3 * length_needed + 0.5 and len(way) < 12:
            placed = False
            for _ in range(30):
                heading_try = heading + rng.uniform(-1.2, 1.2)
                dist = rng.uniform(0.6, 2.0)
                step = dist * np.array([math.cos(heading_try), math.sin(heading_try), 0.0])
                step[2] = rng.uniform(-0.3, 0.3) * dist
                nxt = way[-1] + step
                nxt[2] = np.clip(nxt[2], zlo, zhi)
                if clearance(nxt[None])[0] > need + 0.1 and _segment_clear(clearance, way[-1], nxt, need + 0.05):
                    way.append(nxt)
                    total += float(np.linalg.norm(nxt - way[-2]))
                    heading = heading_try
                    placed = True
                    break
            if not placed:
                break
        if total < length_needed or len(way) < 2:
            continue
        dense = catmull_rom(np.asarray(way), 24, closed=False)
        if path_length(dense) < length_needed or np.any(clearance(dense) <= cfg.clearance):
            continue
        s = np.linspace(0.0, length_needed, cfg.num_frames)
        pos = resample_by_arclength(dense, s)
        travel_yaw = yaw_along(dense, s)
        times = frame_times(cfg.num_frames, cfg.frame_dt)
        yaw = travel_yaw + smooth_wave(rng, times, math.radians(cfg.handheld_look_deg), (0.05, 0.25))
        pitch = math.radians(rng.uniform(-5, 15)) + smooth_wave(rng, times, math.radians(15), (0.05, 0.3))
        roll = smooth_wave(rng, times, math.radians(cfg.handheld_roll_deg), (0.1, 0.4))
        c2w = np.stack([body_to_camera_c2w(pos[i], yaw[i], pitch[i], roll[i]) for i in range(cfg.num_frames)])
        return c2w, times
    raise TrajectoryError("no clear handheld path found")


# --------------------------------------------------------------------------- loop
def loop_trajectory(
    rng: np.random.Generator,
    walls_clearance: ClearanceFn,
    bounds: tuple[np.ndarray, np.ndarray],
    cfg: TrajectoryConfig,
    center_hint: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A ground-robot loop that returns to its start: closed Catmull-Rom through waypoints
    placed around a centre (``center_hint`` xy, e.g. the block of a ring corridor, or a
    random free point), driven forward at constant speed. Frame ``i`` is at arc length
    ``i / (N-1) * L * (1 + loop_overlap)`` so with no overlap the last pose equals the first.
    The speed is lowered where needed to respect ``max_yaw_rate``; times follow from it.
    """
    lo, hi = bounds
    need = cfg.clearance + 0.05
    h = min(rng.uniform(*cfg.ground_height), hi[2] - lo[2] - 0.4)
    for _ in range(cfg.max_tries):
        if center_hint is not None:
            c = np.asarray(center_hint, dtype=np.float64)[:2] + rng.uniform(-0.2, 0.2, 2)
        else:
            c = rng.uniform(lo[:2] + 0.5, hi[:2] - 0.5)
        k = int(rng.integers(5, 8))
        angles = np.linspace(0, 2 * np.pi, k, endpoint=False) + rng.uniform(0, 2 * np.pi)
        angles += rng.uniform(-0.25, 0.25, k) * (2 * np.pi / k)
        way = []
        prev_r = None
        for a in angles:
            radii = np.arange(0.4, 10.0, 0.1)
            pts = c[None] + radii[:, None] * np.array([math.cos(a), math.sin(a)])[None]
            inside = np.all((pts > lo[:2]) & (pts < hi[:2]), axis=1)
            radii, pts = radii[inside], pts[inside]
            if radii.size == 0:
                break
            good = column_clearance(walls_clearance, pts, h) > need + 0.2
            if not good.any():
                break
            r_ok = radii[good]
            if prev_r is not None:  # keep the radius smooth between neighbouring waypoints
                w = np.exp(-((r_ok - prev_r) ** 2) / 0.5)
            else:
                w = np.ones_like(r_ok)
            r = float(rng.choice(r_ok, p=w / w.sum()))
            prev_r = r
            way.append(c + r * np.array([math.cos(a), math.sin(a)]))
        if len(way) < k:
            continue
        dense = catmull_rom(np.asarray(way), 32, closed=True)
        if np.any(column_clearance(walls_clearance, dense, h) <= cfg.clearance):
            continue
        length = path_length(dense)
        if length < 2.0:
            continue
        # three laps, frames taken from the middle one on: start and end see identical neighbourhoods
        period = dense[:-1]
        tiled = np.concatenate([period, period, period, dense[-1:]], axis=0)
        s = length + np.linspace(0.0, length * (1.0 + min(cfg.loop_overlap, 0.9)), cfg.num_frames)
        pos = resample_by_arclength(tiled, s)
        yaw = yaw_along(tiled, s)
        # speed limited by the yaw rate the curve demands
        step = float(s[1] - s[0])
        yaw_per_m = np.abs(np.diff(yaw)).max() / step if cfg.num_frames > 1 else 0.0
        v = rng.uniform(*cfg.ground_speed)
        if yaw_per_m > 0:
            v = min(v, cfg.max_yaw_rate / yaw_per_m)
        dt = step / v
        times = frame_times(cfg.num_frames, dt)
        pitch = math.radians(rng.uniform(-0.5, 1.0) * cfg.max_pitch_deg) * np.ones(cfg.num_frames)
        if cfg.loop_overlap == 0.0:  # exact revisit: keep the small oscillations off the end pose
            pitch[-1] = pitch[0]
        c2w = np.stack([
            body_to_camera_c2w(np.array([pos[i, 0], pos[i, 1], lo[2] + h]), yaw[i], pitch[i], 0.0)
            for i in range(cfg.num_frames)
        ])
        return c2w, times
    raise TrajectoryError("no clear loop found")
