"""Our checkpoint format, and reading any checkpoint file from disk.

Our format (``"format": "ilrm_ros/2"``) is a ``torch.save`` dict::

    {"format": "ilrm_ros/2", "config": ILRMConfig.to_dict(), "state_dict": {...},
     "dtype": "float32" | "float16" | "bfloat16", "meta": {"step": ..., "data_seed": ..., ...}}

It holds only plain Python values and tensors, so it loads with ``weights_only=True``.
Reduced-precision storage halves the file for shipping; it is loaded back as float32.

Format 1 (``ilrm_ros/1``, e.g. the shipped ``ilrm_small.pt``) predates the fix of the
token-uplifting channel order: its uplifted query rows and projection columns are in
consecutive-chunk order and its q/k RMSNorm used eps 1e-6. It is **permuted at load**
(:func:`migrate_v1`) into the authors' interleaved order with ``qk_norm_eps = 1e-6``
kept, so the shipped file computes exactly the function it was trained as; saving it
again writes format 2.

The authors' layouts (Lightning ``.ckpt``, the DL3DV ``model`` dict, plain state dicts,
``.safetensors``) are read by :func:`read_checkpoint_file` and mapped by
:mod:`ilrm_ros.model.official`.
"""
from __future__ import annotations

import logging
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ilrm_ros.model.ilrm import ILRM, ILRMConfig

log = logging.getLogger(__name__)

FORMAT = "ilrm_ros/2"
FORMAT_V1 = "ilrm_ros/1"
SHIPPED_CHECKPOINT = "ilrm_small.pt"
STORAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

__all__ = [
    "FORMAT",
    "FORMAT_V1",
    "STORAGE_DTYPES",
    "PickledObjectsError",
    "save_checkpoint",
    "atomic_save",
    "load_checkpoint",
    "is_own_checkpoint",
    "own_config_and_state",
    "migrate_v1",
    "read_checkpoint_file",
    "default_checkpoint_path",
    "SHARD_BYTES",
    "split_file",
    "join_shards",
]


class PickledObjectsError(ValueError):
    """A checkpoint file holds Python objects besides tensors and was not trusted."""


def default_checkpoint_path() -> Path:
    """Where the shipped checkpoint lives: ``ilrm_ros/checkpoints/ilrm_small.pt``."""
    return Path(__file__).resolve().parent.parent / "checkpoints" / SHIPPED_CHECKPOINT


def _plain(obj: Any) -> Any:
    """Meta values as plain Python (so the file loads with weights_only=True)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def atomic_save(payload: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, then rename (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(
    path: str | Path, model: ILRM, meta: dict | None = None, half: bool = False, dtype: str | None = None
) -> Path:
    """Write ``model`` (config + weights) and ``meta`` atomically in our format.

    Storage dtype: ``dtype`` ("fp32" | "fp16" | "bf16"); ``half=True`` is "fp16".
    """
    path = Path(path)
    key = dtype or ("fp16" if half else "fp32")
    if key not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(STORAGE_DTYPES)}, got {key!r}")
    store = STORAGE_DTYPES[key]
    state = {
        k: (v.detach().to("cpu", store) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in model.state_dict().items()
    }
    payload = {
        "format": FORMAT,
        "config": model.cfg.to_dict(),
        "state_dict": state,
        "dtype": str(store).removeprefix("torch."),
        "meta": _plain(meta or {}),
    }
    atomic_save(payload, path)
    log.info("saved checkpoint %s (%s, %d tensors)", path, payload["dtype"], len(state))
    return path


def is_own_checkpoint(obj: Any) -> bool:
    """True for a loaded dict in our format (any version)."""
    return isinstance(obj, Mapping) and obj.get("format") in (FORMAT, FORMAT_V1)


def migrate_v1(config: dict, state: Mapping[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """Format-1 config and weights -> the same function in format 2.

    Uplifted read blocks (uplift k > 1): sub-query ``s`` was rows ``s*d:(s+1)*d`` of
    ``read_cross.q.weight`` (k*d, d); it is now rows ``s::k``. The projection's input
    columns move the same way. The old q/k RMSNorm eps (1e-6) is kept in the config.
    """
    cfg = dict(config)
    cfg.setdefault("qk_norm_eps", 1e-6)
    k = int(cfg.get("uplift", 1))
    out = dict(state)
    if k > 1:
        for name, w in state.items():
            if name.endswith("read_cross.q.weight"):  # (k*d, d_in): (k, d) chunks -> (d, k) interleaved
                out[name] = w.reshape(k, -1, w.shape[1]).transpose(0, 1).reshape(w.shape)
            elif name.endswith("read_cross.proj.weight"):  # (d_out, k*d)
                out[name] = w.reshape(w.shape[0], k, -1).transpose(1, 2).reshape(w.shape)
    return cfg, out


def own_config_and_state(obj: Mapping[str, Any]) -> tuple[ILRMConfig, dict[str, torch.Tensor]]:
    """Config and float32 weights of a loaded checkpoint in our format (format 1 migrated)."""
    config, state = dict(obj["config"]), dict(obj["state_dict"])
    if obj.get("format") == FORMAT_V1:
        config, state = migrate_v1(config, state)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    return ILRMConfig.from_dict(config), state


def build_model(cfg: ILRMConfig, state: Mapping[str, torch.Tensor], device: torch.device | str = "cpu") -> ILRM:
    """A model for ``cfg`` holding exactly ``state`` (names/shapes checked), in eval mode on ``device``."""
    with torch.device("meta"):
        model = ILRM(cfg)
    model.load_state_dict(dict(state), strict=True, assign=True)
    return model.to(device).eval()


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[ILRM, dict]:
    """Read one of our checkpoints -> (model in eval mode, float32, on ``device``; meta dict)."""
    ckpt = read_checkpoint_file(Path(path))
    if not is_own_checkpoint(ckpt):
        found = ckpt.get("format") if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(
            f"{path} is not an {FORMAT} checkpoint (format={found!r}); "
            "use ilrm_ros.model.loading.load_model_file for the authors' checkpoints"
        )
    cfg, state = own_config_and_state(ckpt)
    return build_model(cfg, state, device), dict(ckpt.get("meta", {}))


def read_checkpoint_file(path: Path, trust_pickle: bool = False) -> Any:
    """Load a checkpoint file's object on the CPU (``.safetensors`` or any ``torch.save`` file).

    Without ``trust_pickle`` only tensors and plain values are unpickled (torch's
    ``weights_only``); a file with other Python objects raises :class:`PickledObjectsError`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):  # not a pickle of Python objects: corrupt or foreign
            detail = [ln.strip() for ln in str(e).split("WeightsUnpickler error:")[-1].splitlines() if ln.strip()]
            raise ValueError(f"{path}: not a readable checkpoint ({detail[0] if detail else 'unpickling failed'})") from e
        raise PickledObjectsError(
            f"{path} holds Python objects besides tensors (common in Lightning checkpoints); "
            "if you trust its source, pass trust_pickle=True (node parameter model.trust_pickle) "
            "or convert it once with `ilrm-ros convert --trust-pickle`"
        ) from e


# --------------------------------------------------------------------------- shards
SHARD_BYTES = 16 * 1024 * 1024
"""Largest shard :func:`split_file` writes by default (16 MiB)."""


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def split_file(path: str | Path, out_dir: str | Path, max_bytes: int = SHARD_BYTES) -> Path:
    """Cut a file into ``<name>.partNNN`` pieces of at most ``max_bytes`` plus ``<name>.shards.json``.

    The manifest lists each part's size and sha256 and the whole file's; the parts joined in
    order (:func:`join_shards`, or ``cat NAME.part* > NAME``) are the file, byte for byte.
    Returns the manifest's path.
    """
    import json

    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    path, out_dir = Path(path), Path(out_dir)
    data = path.read_bytes()
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, start in enumerate(range(0, max(len(data), 1), max_bytes)):
        chunk = data[start:start + max_bytes]
        name = f"{path.name}.part{i:03d}"
        (out_dir / name).write_bytes(chunk)
        parts.append({"file": name, "bytes": len(chunk), "sha256": _sha256(chunk)})
    manifest = {"file": path.name, "bytes": len(data), "sha256": _sha256(data), "max_bytes": max_bytes,
                "parts": parts, "join": f"cat {path.name}.part* > {path.name}  (or: ilrm-ros checkpoint join)"}
    out = out_dir / f"{path.name}.shards.json"
    out.write_text(json.dumps(manifest, indent=1) + "\n")
    log.info("split %s (%d bytes) into %d parts of <= %d bytes in %s", path, len(data), len(parts), max_bytes, out_dir)
    return out


def join_shards(manifest: str | Path, dst: str | Path | None = None) -> Path:
    """Join the parts a :func:`split_file` manifest lists (next to it) into ``dst``.

    Every part's and the whole file's size and sha256 are checked; a mismatch raises
    ValueError and leaves no output. ``dst`` defaults to the original name next to the manifest.
    """
    import json

    manifest = Path(manifest)
    info = json.loads(manifest.read_text())
    chunks = []
    for part in info["parts"]:
        chunk = (manifest.parent / part["file"]).read_bytes()
        if len(chunk) != part["bytes"] or _sha256(chunk) != part["sha256"]:
            raise ValueError(f"shard {part['file']} does not match {manifest.name} (size or sha256)")
        chunks.append(chunk)
    data = b"".join(chunks)
    if len(data) != info["bytes"] or _sha256(data) != info["sha256"]:
        raise ValueError(f"joined shards do not match {manifest.name} (size or sha256)")
    dst = Path(dst) if dst is not None else manifest.parent / info["file"]
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dst)
    log.info("joined %d shards into %s (%d bytes)", len(chunks), dst, len(data))
    return dst
