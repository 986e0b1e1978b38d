"""Checkpoint shards (model/checkpoint.py split_file / join_shards; ilrm-ros checkpoint split|join)."""
import json

import pytest
import torch

from ilrm_ros.model.checkpoint import SHARD_BYTES, join_shards, load_checkpoint, save_checkpoint, split_file
from ilrm_ros.tools.cli import main as cli

from _models import same_weights, tiny


def test_split_join_round_trips_bit_exactly_and_every_shard_is_within_the_limit(tmp_path):
    model = tiny()
    src = save_checkpoint(tmp_path / "m.pt", model, {"step": 3})
    limit = 1000 + src.stat().st_size // 5  # several parts, the last one short
    manifest = split_file(src, tmp_path / "parts", limit)
    parts = sorted((tmp_path / "parts").glob("m.pt.part*"))
    assert len(parts) == -(-src.stat().st_size // limit) >= 5
    assert all(0 < p.stat().st_size <= limit for p in parts)
    joined = join_shards(manifest, tmp_path / "back" / "m.pt")
    assert joined.read_bytes() == src.read_bytes()
    assert same_weights(load_checkpoint(joined)[0], model)
    # joined by plain concatenation, as the manifest says
    assert b"".join(p.read_bytes() for p in parts) == src.read_bytes()
    assert json.loads(manifest.read_text())["max_bytes"] == limit


def test_default_limit_is_16_mib_and_a_file_under_it_is_one_part(tmp_path):
    assert SHARD_BYTES == 16 * 2**20
    src = tmp_path / "small.bin"
    src.write_bytes(b"x" * 10)
    manifest = split_file(src, tmp_path / "p")
    assert [p["bytes"] for p in json.loads(manifest.read_text())["parts"]] == [10]
    assert join_shards(manifest).read_bytes() == b"x" * 10  # default: the original name next to the manifest


def test_a_corrupt_or_missing_shard_is_refused_and_leaves_no_output(tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(bytes(range(256)) * 40)
    manifest = split_file(src, tmp_path / "p", 4096)
    part = tmp_path / "p" / "f.bin.part001"
    data = bytearray(part.read_bytes())
    data[7] ^= 1
    part.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="part001"):
        join_shards(manifest, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
    part.unlink()
    with pytest.raises(FileNotFoundError):
        join_shards(manifest, tmp_path / "out.bin")
    with pytest.raises(ValueError, match="positive"):
        split_file(src, tmp_path / "q", 0)


def test_cli_split_and_join(tmp_path, capsys):
    src = save_checkpoint(tmp_path / "m.pt", tiny(), dtype="fp16")
    assert cli(["checkpoint", "split", str(src), "--out", str(tmp_path / "p"), "--max-mib", "0.1"]) == 0
    assert all(p.stat().st_size <= int(0.1 * 2**20) for p in (tmp_path / "p").glob("m.pt.part*"))
    assert cli(["checkpoint", "join", str(tmp_path / "p" / "m.pt.shards.json"), "--out", str(tmp_path / "j.pt")]) == 0
    assert (tmp_path / "j.pt").read_bytes() == src.read_bytes()
    (tmp_path / "p" / "m.pt.part000").write_bytes(b"broken")
    assert cli(["checkpoint", "join", str(tmp_path / "p" / "m.pt.shards.json"), "--out", str(tmp_path / "k.pt")]) == 2
    assert "does not match" in capsys.readouterr().err
    assert torch.load(tmp_path / "j.pt", weights_only=True)["dtype"] == "float16"
