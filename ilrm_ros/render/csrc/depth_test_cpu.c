/* Points projected into one pinhole camera's cell grid and tested against per-cell depth ranges,
 * and the per-cell depth ranges themselves.
 *
 * The native twins of ilrm_ros/mapping/fusion.py's project_camera() and zbuffer(), and of
 * ilrm_ros/mapping/window_fusion.py's classify_camera() and surface_cells() (numpy/torch on float32;
 * the conventions and the fusion policy are documented there). Every value is the float32 operation
 * of the twin in the twin's order (no contraction: C11 mode compiles a * b + c as two roundings), and
 * minima/maxima do not depend on order, so the results are the same bits;
 * test/mapping/test_fusion_native.py compares them.
 *
 * Layouts: pc (3, n) float32 camera-frame points (x row, y row, z row); k5 = k00, k01, k02, k11,
 * k12 of the camera's K (float32); cells of `downsample`-pixel blocks, `grid_w` cells per row;
 * a visible point's cell is offset by `offset` (its camera's first cell in grids stacked over the
 * window's cameras), an invisible one gets 0.
 */
#include <math.h>
#include <stdint.h>

typedef struct {
    float k00, k01, k02, k11, k12;
    float width, height, near, down;
    int32_t grid_w, offset;
} Camera;

/* One point's visibility and cell (0 where not visible), without branches (the loops vectorize). */
static inline int32_t cell_of(const Camera *c, float x, float y, float z, int *visible) {
    const float m = z < 1e-9f ? 1e-9f : z;    /* np.maximum: NaN stays NaN (the comparison is false) */
    const float inv_z = 1.0f / m;
    float u = c->k00 * x;
    u += c->k01 * y;
    u *= inv_z;
    u += c->k02;
    float v = c->k11 * y;
    v *= inv_z;
    v += c->k12;
    const int vis = (z > c->near) & (u >= 0.0f) & (u < c->width) & (v >= 0.0f) & (v < c->height);
    *visible = vis;
    const float uc = vis ? u / c->down : 0.0f;  /* u, v >= 0 where visible: truncation is the floor */
    const float vc = vis ? v / c->down : 0.0f;  /* (and no cast of a non-finite value) */
    return vis ? (int32_t)vc * c->grid_w + (int32_t)uc + c->offset : 0;
}

static Camera camera(const float *k5, int32_t height, int32_t width, int32_t downsample, float near, int32_t offset) {
    Camera c = {k5[0], k5[1], k5[2], k5[3], k5[4], (float)width, (float)height, near, (float)downsample,
                (width + downsample - 1) / downsample, offset};
    return c;
}

/* project_camera(): visible (n,) uint8 and cell (n,) int32. size = {height, width}. */
void ilrm_project_cells(const float *restrict pc, int64_t n, const float *k5, const int32_t *size,
                        int32_t downsample, float near, uint8_t *restrict visible, int32_t *restrict cell) {
    const Camera c = camera(k5, size[0], size[1], downsample, near, 0);
    const float *x = pc, *y = pc + n, *z = pc + 2 * n;
    for (int64_t i = 0; i < n; i++) {
        int vis;
        cell[i] = cell_of(&c, x[i], y[i], z[i], &vis);
        visible[i] = (uint8_t)vis;
    }
}

/* One camera of classify_old(): the point's stacked cell (flat, 0 if invisible), whether it is at the
 * observed surface (near) or in front of it (free) of that cell's depth range [dmin, dmax] widened by
 * tol = tol_rel * dmin + tol_abs, accumulated into any_free / any_near, and (closest != NULL) the
 * smallest squared distance to a camera that sees it at the surface.
 * geometry = {height, width, downsample, offset}; tol = {tol_rel, tol_abs, near}. */
void ilrm_classify_camera(const float *restrict pc, int64_t n, const float *k5, const int32_t *geometry,
                          const float *tol, const float *restrict dmin, const float *restrict dmax,
                          int32_t *restrict flat, uint8_t *restrict near_out, uint8_t *restrict any_free,
                          uint8_t *restrict any_near, float *restrict closest) {
    const Camera c = camera(k5, geometry[0], geometry[1], geometry[2], tol[2], geometry[3]);
    const float rel = tol[0], abs_tol = tol[1];
    const float *x = pc, *y = pc + n, *z = pc + 2 * n;
    for (int64_t i = 0; i < n; i++) {
        int visible;
        const int32_t f = cell_of(&c, x[i], y[i], z[i], &visible);
        flat[i] = f;
        const float lo = dmin[f], hi = dmax[f];   /* invisible points read cell 0 and are masked */
        const int known = visible & (fabsf(lo) < INFINITY);
        float t = rel * lo;
        t += abs_tol;
        const int is_free = known & (z[i] < lo - t);
        const int is_near = known & !is_free & (z[i] <= hi + t);
        near_out[i] = (uint8_t)is_near;
        any_free[i] |= (uint8_t)is_free;
        any_near[i] |= (uint8_t)is_near;
    }
    if (closest == 0)
        return;
    for (int64_t i = 0; i < n; i++) {   /* a point at the surface has finite coordinates: no NaN here */
        float sq = x[i] * x[i];
        sq += y[i] * y[i];
        sq += z[i] * z[i];
        closest[i] = (near_out[i] && sq < closest[i]) ? sq : closest[i];
    }
}

/* After every camera was classified: per stacked cell, the depth range [kmin, kmax] of the points kept at
 * the surface there (kept[i]) and the largest observation count obs[i] of the points replaced there
 * (replaced[i]; the other points at the surface). near_v, flat: (n_cams, m) as from ilrm_classify_camera;
 * z: camera depths, camera v's row at z + v * z_stride. kmin/kmax/best come in filled with +inf/-inf/0.
 * counts = {kept entries, replaced entries}. The twin: fuse_with_chunks's masked scatters (amin, amax). */
void ilrm_surface_cells(const uint8_t *restrict near_v, const int32_t *restrict flat, const float *restrict z,
                        const int64_t *shape, const uint8_t *restrict kept, const int32_t *restrict obs,
                        float *restrict kmin, float *restrict kmax, int32_t *restrict best, int64_t *counts) {
    const int64_t n_cams = shape[0], m = shape[1], z_stride = shape[2];
    int64_t n_kept = 0, n_replaced = 0;
    for (int64_t v = 0; v < n_cams; v++) {
        const uint8_t *nv = near_v + v * m;
        const int32_t *fv = flat + v * m;
        const float *zv = z + v * z_stride;
        for (int64_t i = 0; i < m; i++) {
            if (!nv[i])
                continue;
            const int32_t f = fv[i];
            if (kept[i]) {
                kmin[f] = zv[i] < kmin[f] ? zv[i] : kmin[f];
                kmax[f] = zv[i] > kmax[f] ? zv[i] : kmax[f];
                n_kept++;
            } else {
                best[f] = obs[i] > best[f] ? obs[i] : best[f];
                n_replaced++;
            }
        }
    }
    counts[0] = n_kept, counts[1] = n_replaced;
}

/* Per camera and cell the min and max depth of the visible points (fusion.zbuffer's scatters): visible,
 * cell (n_cams, n) uint8 / int64 (cells within one camera's grid); z: camera v's row at z + v * z_stride.
 * dmin/dmax (n_cams * n_cells) come in filled with +inf / -inf. shape = {n_cams, n, z_stride, n_cells}. */
void ilrm_zbuffer(const uint8_t *restrict visible, const int64_t *restrict cell, const float *restrict z,
                  const int64_t *shape, float *restrict dmin, float *restrict dmax) {
    const int64_t n_cams = shape[0], n = shape[1], z_stride = shape[2], n_cells = shape[3];
    for (int64_t v = 0; v < n_cams; v++) {
        const uint8_t *vis = visible + v * n;
        const int64_t *cv = cell + v * n;
        const float *zv = z + v * z_stride;
        float *lo = dmin + v * n_cells, *hi = dmax + v * n_cells;
        for (int64_t i = 0; i < n; i++) {
            if (!vis[i])
                continue;
            const int64_t c = cv[i];
            lo[c] = zv[i] < lo[c] ? zv[i] : lo[c];
            hi[c] = zv[i] > hi[c] ? zv[i] : hi[c];
        }
    }
}
