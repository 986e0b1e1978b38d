"""3DGS PLY files: exact round trips, the standard layout as plyfile sees it, other tools' files."""
import io
import logging
import math

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.io.ply import SH_C0, load_ply, read_ply, save_ply

STANDARD_ORDER = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                  "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def random_gaussians(n: int, seed: int = 0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=torch.randn(n, 3, generator=gen) * 5,
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1),
        scales=torch.exp(torch.randn(n, 3, generator=gen) - 4),
        opacities=torch.rand(n, generator=gen) * 0.98 + 0.01,
        colors=torch.rand(n, 3, generator=gen),
    )


def assert_same_gaussians(a: Gaussians, b: Gaussians) -> None:
    torch.testing.assert_close(a.means, b.means, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a.quats, b.quats, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a.scales, b.scales, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(a.opacities, b.opacities, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a.colors, b.colors, rtol=1e-6, atol=1e-6)


def other_tool_file(fields: dict[str, np.ndarray], text: bool = False, byte_order: str = "<",
                    dtype: str = "f4") -> io.BytesIO:
    """A PLY written by plyfile, standing in for another 3DGS tool."""
    n = len(next(iter(fields.values())))
    table = np.empty(n, dtype=[(k, dtype) for k in fields])
    for k, v in fields.items():
        table[k] = v
    buf = io.BytesIO()
    PlyData([PlyElement.describe(table, "vertex")], text=text, byte_order=byte_order).write(buf)
    buf.seek(0)
    return buf


def standard_fields(g: Gaussians, normals: bool = True) -> dict[str, np.ndarray]:
    """What a 3DGS trainer writes for these Gaussians (activation inverses done independently)."""
    op = g.opacities.double().numpy()
    out = {"x": g.means[:, 0].numpy(), "y": g.means[:, 1].numpy(), "z": g.means[:, 2].numpy()}
    if normals:
        out.update(nx=np.zeros(len(g)), ny=np.zeros(len(g)), nz=np.zeros(len(g)))
    for i in range(3):
        out[f"f_dc_{i}"] = (g.colors[:, i].double().numpy() - 0.5) / 0.28209479
    out["opacity"] = np.log(op / (1 - op))
    for i in range(3):
        out[f"scale_{i}"] = np.log(g.scales[:, i].double().numpy())
    for i in range(4):
        out[f"rot_{i}"] = g.quats[:, i].numpy()
    return out


def test_save_then_load_round_trips_to_float32_precision(tmp_path):
    g = random_gaussians(500)
    save_ply(tmp_path / "map.ply", g)
    assert_same_gaussians(load_ply(tmp_path / "map.ply"), g)
    save_ply(str(tmp_path / "map2.ply"), g)  # str paths too
    assert_same_gaussians(load_ply(str(tmp_path / "map2.ply")), g)


def test_plyfile_sees_the_standard_3dgs_layout_and_values(tmp_path):
    g = random_gaussians(50, seed=1)
    save_ply(tmp_path / "map.ply", g, comments=["made by ilrm_ros", "frame: map"])
    ply = PlyData.read(str(tmp_path / "map.ply"))
    assert ply.byte_order == "<" and not ply.text
    assert ply.comments == ["made by ilrm_ros", "frame: map"]
    v = ply["vertex"]
    assert [p.name for p in v.properties] == STANDARD_ORDER
    assert all(p.val_dtype in ("f4", "float32", "float") for p in v.properties)
    data = v.data
    assert len(data) == 50
    np.testing.assert_allclose(data["x"], g.means[:, 0].numpy(), rtol=1e-7)
    np.testing.assert_array_equal(data["nx"], 0)
    np.testing.assert_allclose(data["f_dc_1"], (g.colors[:, 1].numpy() - 0.5) / 0.28209479, rtol=1e-5, atol=1e-6)
    op = g.opacities.double().numpy()
    np.testing.assert_allclose(data["opacity"], np.log(op / (1 - op)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data["scale_2"], np.log(g.scales[:, 2].numpy()), rtol=1e-6)
    np.testing.assert_allclose(np.stack([data[f"rot_{i}"] for i in range(4)], -1), g.quats.numpy(), rtol=1e-7)


def test_opacities_of_exactly_0_and_1_are_clamped_before_the_logit(tmp_path):
    g = random_gaussians(3)
    g.opacities = torch.tensor([0.0, 1.0, 0.5])
    save_ply(tmp_path / "m.ply", g)
    logits = PlyData.read(str(tmp_path / "m.ply"))["vertex"].data["opacity"]
    assert np.isfinite(logits).all()
    back = load_ply(tmp_path / "m.ply").opacities
    torch.testing.assert_close(back, torch.tensor([1e-6, 1 - 1e-6, 0.5]), atol=1e-7, rtol=0)


def test_file_objects_extras_and_comments_round_trip():
    g = random_gaussians(20, seed=2)
    conf = np.linspace(0, 1, 20).astype(np.float32)
    stamp = np.arange(20, dtype=np.float32)
    buf = io.BytesIO()
    save_ply(buf, g, extras={"confidence": conf, "first_seen": stamp}, comments="window 7")
    buf.seek(0)
    got = read_ply(buf)
    assert_same_gaussians(got.gaussians, g)
    assert set(got.extras) == {"confidence", "first_seen"}
    np.testing.assert_array_equal(got.extras["confidence"], conf)
    np.testing.assert_array_equal(got.extras["first_seen"], stamp)
    assert got.comments == ["window 7"] and got.sh_rest is None


def test_a_file_with_sh_degree_3_loads_its_dc_colour_and_keeps_the_rest_apart(caplog):
    g = random_gaussians(10, seed=3)
    fields = standard_fields(g)
    rest = np.random.default_rng(0).normal(size=(10, 15, 3))  # (N, bands, rgb)
    flat = rest.transpose(0, 2, 1).reshape(10, 45)  # channel-major, as the 3DGS trainer writes it
    ordered = {k: fields[k] for k in STANDARD_ORDER[:9]}
    ordered.update({f"f_rest_{i}": flat[:, i] for i in range(45)})
    ordered.update({k: fields[k] for k in STANDARD_ORDER[9:]})
    with caplog.at_level(logging.INFO, logger="ilrm_ros.io.ply"):
        loaded = load_ply(other_tool_file(ordered))
    assert "SH degree 3" in caplog.text
    assert_same_gaussians(loaded, g)
    got = read_ply(other_tool_file(ordered))
    assert got.sh_rest.shape == (10, 15, 3)
    np.testing.assert_allclose(got.sh_rest, rest, rtol=1e-6)
    assert got.extras == {}
    # and the higher bands can be written back unchanged
    buf = io.BytesIO()
    save_ply(buf, got.gaussians, sh_rest=got.sh_rest)
    buf.seek(0)
    np.testing.assert_allclose(read_ply(buf).sh_rest, rest, rtol=1e-6)


@pytest.mark.parametrize("text,byte_order,dtype", [(True, "=", "f4"), (False, ">", "f4"), (False, "<", "f8")],
                         ids=["ascii", "big-endian", "double"])
def test_other_tools_encodings_without_normals_and_with_unknown_fields_load(text, byte_order, dtype):
    g = random_gaussians(30, seed=4)
    fields = standard_fields(g, normals=False)
    fields["segment_id"] = np.arange(30, dtype=np.float64)
    loaded = load_ply(other_tool_file(fields, text=text, byte_order=byte_order, dtype=dtype))
    tol = 1e-5 if text else 1e-6  # ascii keeps fewer digits
    for name in ("means", "quats", "scales", "opacities", "colors"):
        torch.testing.assert_close(getattr(loaded, name), getattr(g, name), rtol=tol, atol=tol)
    assert read_ply(other_tool_file(fields, text=text, byte_order=byte_order, dtype=dtype)).extras.keys() == {
        "segment_id"}


def test_unnormalised_quaternions_and_out_of_range_colours_from_other_tools_are_cleaned():
    g = random_gaussians(4, seed=5)
    fields = standard_fields(g)
    for i in range(4):
        fields[f"rot_{i}"] = fields[f"rot_{i}"] * 3.0
    fields["f_dc_0"] = np.array([5.0, -5.0, 0.0, 0.0])
    loaded = load_ply(other_tool_file(fields))
    torch.testing.assert_close(loaded.quats, g.quats, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loaded.colors[:, 0], torch.tensor([1.0, 0.0, 0.5, 0.5]))


def test_empty_and_batched_gaussians(tmp_path):
    save_ply(tmp_path / "empty.ply", Gaussians.empty())
    assert len(load_ply(tmp_path / "empty.ply")) == 0
    g = random_gaussians(6, seed=6)
    batched = g.map(lambda t: t.reshape(2, 3, *t.shape[1:]).requires_grad_(False))
    save_ply(tmp_path / "b.ply", batched)
    assert_same_gaussians(load_ply(tmp_path / "b.ply"), g)


def test_files_that_are_not_gaussian_splats_are_rejected_by_name():
    g = random_gaussians(3)
    fields = standard_fields(g)
    del fields["scale_1"]
    with pytest.raises(ValueError, match="scale_1"):
        load_ply(other_tool_file(fields))


@pytest.mark.parametrize("extras", [{"opacity": np.zeros(4)}, {"bad name": np.zeros(4)}, {"ok": np.zeros(3)}],
                         ids=["reserved", "not-identifier", "wrong-length"])
def test_invalid_extra_fields_are_refused(extras):
    with pytest.raises(ValueError):
        save_ply(io.BytesIO(), random_gaussians(4), extras=extras)


def test_sh_constant_is_the_degree_0_basis():
    assert SH_C0 == pytest.approx(1 / (2 * math.sqrt(math.pi)), rel=1e-12)
