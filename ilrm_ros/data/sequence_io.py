"""Generated sequences on disk: one folder per sequence (``scene_00000/``) holding any of

* ``scene.npz`` — the compact training format read by :func:`load_scene` (uint8
  images, float32 c2w/K, depth as float16 metres, int64 timestamps, names);
* ``transforms.json`` + ``images/*.png`` + ``depth/*.png`` (16-bit mm);
* ``bag/`` — a rosbag2 bag (see :mod:`ilrm_ros.io.bags`);
* ``scene.json`` — the scene description (always written; enough to re-render).

``ilrm-ros data synth`` adds ``index.json`` at the top (the configuration and one line per
sequence).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .scene import Scene
from ilrm_ros.io.transforms_json import PosedImages, load_transforms_json, write_transforms_json

FORMAT_CHOICES = ("npz", "transforms", "bag", "both", "all")


def save_npz(path: str | Path, posed: PosedImages, compress: bool = True) -> Path:
    """Compact one-file format: uint8 images, float32 c2w/K, float16 depth (metres), int64 stamps."""
    path = Path(path)
    arrays = {"images": posed.images, "c2w": posed.c2w, "K": posed.K, "names": np.asarray(posed.names)}
    if posed.depths is not None:
        arrays["depths"] = np.where(np.isfinite(posed.depths), posed.depths, 0.0).astype(np.float16)
    if posed.timestamps is not None:
        arrays["timestamps"] = posed.timestamps
    arrays["meta"] = np.asarray(json.dumps(posed.meta))
    (np.savez_compressed if compress else np.savez)(path, **arrays)
    return path


def load_npz(path: str | Path) -> PosedImages:
    with np.load(path, allow_pickle=False) as z:
        return PosedImages(
            images=z["images"],
            c2w=z["c2w"],
            K=z["K"],
            names=[str(n) for n in z["names"]],
            depths=z["depths"].astype(np.float32) if "depths" in z else None,
            timestamps=z["timestamps"] if "timestamps" in z else None,
            meta=json.loads(str(z["meta"])) if "meta" in z else {},
        )


def load_scene(path: str | Path) -> PosedImages:
    """Load a sequence from a ``.npz`` file, a ``transforms.json`` (or its folder), a rosbag2
    bag folder, or a generated ``scene_*`` folder (``scene.npz`` preferred, then
    ``transforms.json``, then ``bag/``)."""
    p = Path(path)
    if p.is_file():
        if p.suffix == ".npz":
            return load_npz(p)
        if p.suffix == ".json":
            return load_transforms_json(p)
        raise ValueError(f"don't know how to load {p}")
    if (p / "scene.npz").is_file():
        return load_npz(p / "scene.npz")
    if (p / "transforms.json").is_file():
        return load_transforms_json(p)
    from ilrm_ros.io.bags import read_bag  # rosbags only when a bag is read

    if (p / "metadata.yaml").is_file():
        return read_bag(p)
    if (p / "bag" / "metadata.yaml").is_file():
        return read_bag(p / "bag")
    raise FileNotFoundError(f"no scene.npz, transforms.json or bag in {p}")


def load_scene_description(folder: str | Path) -> Scene:
    """The :class:`Scene` of a generated sequence folder (its ``scene.json``): render it from
    any pose with :func:`ilrm_ros.data.scene.render` to get exact novel views and depth."""
    return Scene.from_dict(json.loads((Path(folder) / "scene.json").read_text())["scene"])


def _formats(fmt: str) -> set[str]:
    return {"npz": {"npz"}, "transforms": {"transforms"}, "bag": {"bag"}, "both": {"transforms", "bag"},
            "all": {"npz", "transforms", "bag"}}[fmt]


def write_sequence(out_dir: str | Path, scene: Scene, posed: PosedImages, fmt: str = "npz",
                   bag_storage: str = "mcap", bag_compressed: bool = False) -> Path:
    """Write one generated sequence into ``out_dir`` in the chosen format(s); see the module doc."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kinds = _formats(fmt)
    (out / "scene.json").write_text(json.dumps({"meta": posed.meta, "scene": scene.to_dict()}))
    if "npz" in kinds:
        save_npz(out / "scene.npz", posed)
    if "transforms" in kinds:
        write_transforms_json(out, posed)
    if "bag" in kinds:
        from ilrm_ros.io.bags import BagFormat, write_bag

        bag = out / "bag"
        if bag.exists():
            raise FileExistsError(f"{bag} exists")
        write_bag(bag, posed, BagFormat(storage=bag_storage, compressed=bag_compressed))
    return out
