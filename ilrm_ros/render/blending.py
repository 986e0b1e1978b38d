"""Steps 2 and 3 of the torch rasterizer: binning projected Gaussians into tiles, and blending.

2. **Bin** (:func:`bin_to_tiles`): each visible Gaussian is listed in every tile its box
   touches; one stable sort by (camera, tile) of depth-ordered entries gives each tile a
   front-to-back list.
3. **Composite** (:func:`composite`): all tiles advance together, ``chunk`` Gaussians of
   every tile's list per step. Around a tile's centre the exponent ``log o − σ(p)`` is a
   quadratic polynomial in the pixel offset, so the (pixels × Gaussians) exponents of all
   tiles are one batched matrix product. Then ``α = min(0.999, o·exp(−σ))``, α < 1/255 is
   skipped, transmittance is a cumulative product, and a pixel stops (exclusively) at the
   first Gaussian that would bring T to ≤ 1e-4 — all as gsplat does. Tiles whose lists end
   or whose pixels are all done leave the batch.

Memory is bounded by ``RasterConfig.max_pairs`` (pixel × Gaussian pairs alive at once).
With gradients, a step keeps only its small (K-sized) inputs and is recomputed in its
hand-written backward (:class:`_CompositeStep`); the plain-autograd step
(:func:`_composite_step`, under activation checkpointing) is the reference it is tested against.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ilrm_ros.render import native
from ilrm_ros.render.projection import Projection
from ilrm_ros.render.raster_config import ALPHA_MAX, ALPHA_MIN, T_MIN, RasterConfig

_PAD_EXPONENT = -1e3  # exponent of padding slots: exp() is exactly 0


@dataclass
class TileBins:
    """Per-tile front-to-back lists of projected Gaussians.

    ids:    (M,) int32 flat instance ids ``c * N + n``, grouped by tile, by depth within a tile.
    starts: (C * tiles_y * tiles_x,) offset of each tile's list in ``ids``.
    counts: (C * tiles_y * tiles_x,) length of each tile's list.
    """

    ids: Tensor
    starts: Tensor
    counts: Tensor
    tiles_x: int
    tiles_y: int


def bin_to_tiles(proj: Projection, width: int, height: int, tile_size: int, use_native: bool = True) -> TileBins:
    """List every visible Gaussian in each tile its box touches, front to back per tile.

    With the compiled kernel (CPU, ``use_native``) one counting sort over all cameras; else
    (the reference) one camera at a time with int32 entries, so the transient memory is about
    36 bytes per (Gaussian, tile) entry of the largest camera. Both give the same lists.
    """
    n_cams, n = proj.depths.shape
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    per_cam = tiles_x * tiles_y
    fast = use_native and proj.depths.device.type == "cpu" and native.load() is not None
    ids, counts, tile0, rects = [], [], [], []
    with torch.no_grad():
        for cam in range(n_cams):
            inst, rect = _tile_rects(proj.means2d[cam].detach(), proj.radii[cam], proj.depths[cam].detach(),
                                     proj.visible[cam], (tiles_x, tiles_y), tile_size)
            if fast:
                ids.append(inst + cam * n)
                tile0.append(torch.full_like(inst, cam * per_cam))
                rects.append(rect)
                continue
            cam_ids, cam_tiles = _sort_entries(inst, rect, tiles_x)
            ids.append(cam_ids + cam * n)
            counts.append(torch.bincount(cam_tiles, minlength=per_cam))
        if fast:
            ids, counts = native.bin_tiles_native(torch.cat(ids), torch.cat(tile0),
                                                  tuple(torch.cat(r) for r in zip(*rects)), tiles_x, n_cams * per_cam)
        else:
            ids, counts = torch.cat(ids), torch.cat(counts)
        starts = torch.cumsum(counts, 0) - counts
    return TileBins(ids=ids, starts=starts, counts=counts, tiles_x=tiles_x, tiles_y=tiles_y)


def _tile_rects(means2d: Tensor, radii: Tensor, depths: Tensor, visible: Tensor, tiles: tuple[int, int],
                tile_size: int) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
    """One camera's visible Gaussians front to back and the tiles their boxes touch.

    means2d (N, 2), radii (N, 2), depths (N,), visible (N,), tiles = (tiles_x, tiles_y)
    -> (ids (K,) int32, (x0, x1, y0, y1) (K,) int32 each: tiles [x0, x1) x [y0, y1)).
    """
    tiles_x, tiles_y = tiles
    inst = torch.nonzero(visible).squeeze(1)
    inst = inst[torch.argsort(depths[inst], stable=True)]  # depth order survives the stable tile sort
    centre = means2d[inst] / tile_size
    half = radii[inst].to(centre.dtype) / tile_size
    x0 = torch.floor(centre[:, 0] - half[:, 0]).clamp(0, tiles_x).int()
    x1 = torch.ceil(centre[:, 0] + half[:, 0]).clamp(0, tiles_x).int()
    y0 = torch.floor(centre[:, 1] - half[:, 1]).clamp(0, tiles_y).int()
    y1 = torch.ceil(centre[:, 1] + half[:, 1]).clamp(0, tiles_y).int()
    return inst.int(), (x0, x1, y0, y1)


def _sort_entries(inst: Tensor, rects: tuple[Tensor, Tensor, Tensor, Tensor], tiles_x: int) -> tuple[Tensor, Tensor]:
    """(Gaussian id, tile id) entries of one camera sorted by (tile, list order): (M,) int32 each.

    The plain-torch twin of ``native.bin_tiles_native``: inst (K,) front to back, rects as
    :func:`_tile_rects` gives them.
    """
    x0, x1, y0, y1 = rects
    span_x = x1 - x0
    per_inst = span_x * (y1 - y0)  # tiles touched by each Gaussian
    total = int(per_inst.sum())
    # entry e of Gaussian i covers tile y0·tiles_x + x0 + row·tiles_x + col, with local = row·span_x + col
    first = (torch.cumsum(per_inst, 0) - per_inst).int()
    local = torch.arange(total, dtype=torch.int32, device=inst.device)
    local -= torch.repeat_interleave(first, per_inst, output_size=total)
    span = torch.repeat_interleave(span_x, per_inst, output_size=total)
    row = torch.div(local, span, rounding_mode="floor")
    tile = torch.repeat_interleave(y0 * tiles_x + x0, per_inst, output_size=total)
    tile += row * (tiles_x - span) + local
    del local, span, row
    tile, order = torch.sort(tile, stable=True)
    ids = torch.repeat_interleave(inst, per_inst, output_size=total).index_select(0, order)
    return ids, tile


def _gather(table: Tensor, ids: Tensor) -> Tensor:
    """Rows of ``table`` (M, ...) at ``ids`` (any shape) -> (*ids.shape, ...)."""
    return table.index_select(0, ids.reshape(-1)).reshape(*ids.shape, *table.shape[1:])


def _pixel_basis(tile_size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Monomials of each pixel's offset (u, v) from its tile's centre: (P, 6) = [u², v², uv, u, v, 1]."""
    off = torch.arange(tile_size, dtype=dtype, device=device) + 0.5 - tile_size / 2
    v, u = torch.meshgrid(off, off, indexing="ij")
    u, v = u.reshape(-1), v.reshape(-1)
    return torch.stack([u * u, v * v, u * v, u, v, torch.ones_like(u)], dim=-1)


def _exponent_coefficients(means2d: Tensor, conics: Tensor, log_opac: Tensor, centres: Tensor,
                           real: Tensor) -> Tensor:
    """Coefficients of ``log o − σ`` in the pixel basis, per (tile, slot): -> (T, 6, K).

    means2d (T, K, 2), conics (T, K, 3), log_opac (T, K), centres (T, 2) tile centres in
    pixels, real (T, K) bool (False = padding slot, whose exponent is -1e3).
    σ(p) = ½ dᵀ A d with d = p − μ = (u, v) + δ, δ = centre − μ, expanded in (u, v).
    """
    a, b, c = conics.unbind(-1)
    delta = centres[:, None, :] - means2d
    dx, dy = delta.unbind(-1)
    gx, gy = a * dx + b * dy, b * dx + c * dy
    sigma0 = 0.5 * (dx * gx + dy * gy)
    const = torch.where(real, log_opac - sigma0, torch.full_like(sigma0, _PAD_EXPONENT))
    zero = torch.zeros_like(a)
    a, b, c, gx, gy = (torch.where(real, t, zero) for t in (a, b, c, gx, gy))
    return torch.stack([-0.5 * a, -0.5 * c, -b, -gx, -gy, const], dim=1)


def _composite_step(basis: Tensor, coef: Tensor, feats: Tensor, trans: Tensor) -> tuple[Tensor, Tensor]:
    """Blend the next K Gaussians of L tiles into their P pixels (differentiable version).

    basis (P, 6), coef (L, 6, K), feats (L, K, F) whose last column is all ones,
    trans (L, P) transmittance before these Gaussians, 0 for pixels already done
    -> (Σ_k w_k f_k (L, P, F) — its last column is Σ w —, done after the step (L, P) bool).
    """
    alpha = F.threshold(torch.matmul(basis, coef).exp_().clamp_max(ALPHA_MAX), ALPHA_MIN, 0.0)
    keep_t = 1.0 - alpha
    # T after each Gaussian, zeroed from the first one that would bring it to <= T_MIN on
    # (a suffix, since T only decreases): gsplat stops the pixel before that Gaussian.
    t_after = F.threshold(torch.cumprod(keep_t, dim=-1) * trans[..., None], T_MIN, 0.0)
    weights = alpha / keep_t * t_after  # α_k · T before k
    return torch.bmm(weights, feats), t_after[..., -1] == 0


@torch.no_grad()
def _composite_step_inplace(basis: Tensor, coef: Tensor, feats: Tensor, trans: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`_composite_step` without autograd, reusing its buffers (same maths)."""
    alpha = torch.matmul(basis, coef).exp_().clamp_max_(ALPHA_MAX)
    F.threshold_(alpha, ALPHA_MIN, 0.0)
    keep_t = torch.rsub(alpha, 1.0)
    t_after = F.threshold_(torch.cumprod(keep_t, dim=-1).mul_(trans[..., None]), T_MIN, 0.0)
    weights = alpha.div_(keep_t).mul_(t_after)
    return torch.bmm(weights, feats), t_after[..., -1] == 0


class _CompositeStep(torch.autograd.Function):
    """:func:`_composite_step` with a hand-written backward that recomputes the step.

    Saves only the step's inputs (K-sized), so memory stays bounded without checkpointing.
    With g_k = ∂L/∂out · f_k, kept Gaussians k (those before the stop) and T_k the
    transmittance before k:  ∂L/∂α_k = T_k g_k − (Σ_{m>k} w_m g_m) / (1 − α_k),
    ∂L/∂T0 = Σ_k α_k (T_k / T0) g_k, ∂L/∂f_k = Σ_p w_k ∂L/∂out, and ∂α/∂E = α where
    1/255 < α < 0.999 (0 where clamped or skipped, as in gsplat).
    """

    @staticmethod
    def forward(ctx, basis: Tensor, coef: Tensor, feats: Tensor, trans: Tensor) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(basis, coef, feats, trans)
        out, done = _composite_step_inplace(basis, coef, feats, trans)
        ctx.mark_non_differentiable(done)
        return out, done

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_done: Tensor | None):
        basis, coef, feats, trans = ctx.saved_tensors
        alpha = torch.matmul(basis, coef).exp_()  # (L, P, K)
        clamped = alpha >= ALPHA_MAX  # no gradient through the clamp (skipped ones get α = 0)
        F.threshold_(alpha.clamp_max_(ALPHA_MAX), ALPHA_MIN, 0.0)
        keep_t = torch.rsub(alpha, 1.0)
        prod = torch.cumprod(keep_t, dim=-1)
        stopped = prod * trans[..., None] <= T_MIN  # as in forward: the pixel stopped before k
        u = prod.div_(keep_t).mul_(alpha).masked_fill_(stopped, 0.0)  # α_k T_k / T0 = w_k / T0
        g = torch.bmm(grad_out, feats.transpose(1, 2))  # (L, P, K)
        wg = u * g
        grad_trans = wg.sum(-1)
        t0 = trans[..., None]
        wg.mul_(t0)  # w_k g_k
        after = torch.cumsum(wg, dim=-1).neg_().add_(grad_trans[..., None] * t0)  # Σ_{m>k} w_m g_m
        # ∂L/∂E_k = α_k ∂L/∂α_k = w_k g_k − α_k after_k / (1 − α_k) for kept, unclamped k
        grad_e = wg.sub_(after.div_(keep_t).mul_(alpha).masked_fill_(stopped, 0.0)).masked_fill_(clamped, 0.0)
        grad_coef = torch.matmul(basis.t(), grad_e)
        grad_feats = torch.bmm(u.mul_(t0).transpose(1, 2), grad_out)
        return None, grad_coef, grad_feats, grad_trans


@dataclass
class _Instances:
    """Flat per-(camera, Gaussian) tables the compositing steps gather from (M = C·N rows).

    means2d (M, 2), conics (M, 3), log_opac (M,), feats (M, F) whose last column is all ones.
    """

    means2d: Tensor
    conics: Tensor
    log_opac: Tensor
    feats: Tensor


def _composite_tiles(tiles: Tensor, bins: TileBins, inst: _Instances, basis: Tensor, step, use_ckpt: bool,
                     config: RasterConfig) -> tuple[Tensor, Tensor]:
    """Blend the front-to-back lists of a batch of tiles, ``config.chunk`` Gaussians per step.

    tiles (B,) tile ids -> (Σ w f (B, P, F − 1), transmittance (B, P)). Tiles leave the
    loop when their list ends or all their pixels are done.
    """
    ts, dtype, device = config.tile_size, basis.dtype, basis.device
    n_tiles, n_pix, n_feats = tiles.numel(), basis.shape[0], inst.feats.shape[1]
    starts, counts = bins.starts[tiles], bins.counts[tiles]
    rem = tiles % (bins.tiles_x * bins.tiles_y)
    centres = torch.stack([rem % bins.tiles_x, rem // bins.tiles_x], -1).to(dtype) * ts + ts / 2
    acc = torch.zeros(n_tiles, n_pix, n_feats - 1, dtype=dtype, device=device)  # Σ w f
    trans = torch.ones(n_tiles, n_pix, dtype=dtype, device=device)  # T = 1 − Σ w
    done = torch.zeros(n_tiles, n_pix, dtype=torch.bool, device=device)
    first = 0
    while True:
        live = torch.nonzero((counts > first) & ~done.all(1)).squeeze(1)
        if live.numel() == 0:
            return acc, trans
        everyone = live.numel() == n_tiles

        def pick(t: Tensor) -> Tensor:
            return t if everyone else t.index_select(0, live)

        live_counts = pick(counts)
        slots = first + torch.arange(min(config.chunk, int(live_counts.max()) - first), device=device)
        real = slots[None, :] < live_counts[:, None]  # (L, K), False = padding
        ids = _gather(bins.ids, (pick(starts)[:, None] + slots).clamp_max(bins.ids.numel() - 1))
        coef = _exponent_coefficients(_gather(inst.means2d, ids), _gather(inst.conics, ids),
                                      _gather(inst.log_opac, ids), pick(centres), real)
        step_feats = _gather(inst.feats, ids) * real[..., None].to(dtype)
        live_trans, live_done = pick(trans), pick(done)
        step_trans = live_trans.masked_fill(live_done, 0.0)
        if use_ckpt:
            contrib, new_done = checkpoint(step, basis, coef, step_feats, step_trans, use_reentrant=False)
        else:
            contrib, new_done = step(basis, coef, step_feats, step_trans)
        new_trans = live_trans - contrib[..., -1]
        if everyone:
            acc, trans, done = acc + contrib[..., :-1], new_trans, done | new_done
        else:
            acc = acc.index_add(0, live, contrib[..., :-1])
            trans = trans.index_copy(0, live, new_trans)
            done = done.index_copy(0, live, live_done | new_done)
        first = int(slots[-1]) + 1


def composite(
    proj: Projection,
    opacities: Tensor,
    feats: Tensor,
    bins: TileBins,
    width: int,
    height: int,
    config: RasterConfig = RasterConfig(),
) -> tuple[Tensor, Tensor]:
    """Front-to-back blending of per-instance features.

    opacities (N,), feats (C, N, F) -> (blended (C, H, W, F) = Σ w_i f_i, transmittance (C, H, W)).
    """
    n_cams, n = proj.depths.shape
    n_feats = feats.shape[-1]
    ts = config.tile_size
    if config.native and native.available(feats, ts):
        return native.composite_native(proj.means2d.reshape(-1, 2), proj.conics.reshape(-1, 3),
                                       opacities.expand(n_cams, n).reshape(-1), feats.reshape(-1, n_feats), bins,
                                       n_cams, (width, height), ts)
    n_pix = ts * ts
    dtype, device = feats.dtype, feats.device
    n_tiles = n_cams * bins.tiles_x * bins.tiles_y

    feats = feats.reshape(-1, n_feats)
    inst = _Instances(
        means2d=proj.means2d.reshape(-1, 2),
        conics=proj.conics.reshape(-1, 3),
        log_opac=torch.log(opacities.clamp_min(ALPHA_MIN)).expand(n_cams, n).reshape(-1),
        feats=torch.cat([feats, torch.ones_like(feats[:, :1])], dim=-1),  # last column sums the weights
    )
    basis = _pixel_basis(ts, dtype, device)
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (inst.means2d, inst.conics, inst.log_opac, inst.feats))
    step = _composite_step_inplace
    if needs_grad:
        step = _CompositeStep.apply if config.analytic_backward else _composite_step
    use_ckpt = needs_grad and not config.analytic_backward

    active = torch.nonzero(bins.counts > 0).squeeze(1)
    tiles_per_batch = max(1, config.max_pairs // (n_pix * config.chunk))
    parts = [_composite_tiles(active[b0:b0 + tiles_per_batch], bins, inst, basis, step, use_ckpt, config)
             for b0 in range(0, active.numel(), tiles_per_batch)]

    acc_all = torch.zeros(n_tiles, n_pix, n_feats, dtype=dtype, device=device)
    trans_all = torch.ones(n_tiles, n_pix, dtype=dtype, device=device)
    if parts:
        acc_all = acc_all.index_copy(0, active, torch.cat([acc for acc, _ in parts]))
        trans_all = trans_all.index_copy(0, active, torch.cat([trans for _, trans in parts]))
    elif needs_grad:
        # Nothing visible: keep the outputs attached to the inputs (all-zero gradients).
        link = sum((t.sum() * 0 for t in (inst.means2d, inst.conics, inst.log_opac, inst.feats) if t.requires_grad),
                   torch.zeros((), dtype=dtype, device=device))
        acc_all = acc_all + link

    def untile(x: Tensor) -> Tensor:
        x = x.reshape(n_cams, bins.tiles_y, bins.tiles_x, ts, ts, *x.shape[2:])
        x = x.transpose(2, 3).reshape(n_cams, bins.tiles_y * ts, bins.tiles_x * ts, *x.shape[5:])
        return x[:, :height, :width]

    return untile(acc_all), untile(trans_all)
