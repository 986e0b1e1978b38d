/* Front-to-back alpha compositing of binned 2-D Gaussians on the CPU, forward and backward.
 *
 * The native twin of ilrm_ros/render/blending.py's composite() (the plain-torch reference it is
 * tested against), with the same rules as gsplat 1.5's classic rasterizer:
 *   sigma = 0.5 (a dx^2 + c dy^2) + b dx dy,   d = pixel centre (j + 0.5, i + 0.5) - mean,
 *   alpha = min(ALPHA_MAX, o exp(-sigma)),     alpha <= ALPHA_MIN is skipped,
 *   a pixel stops before the Gaussian that would bring its transmittance to <= T_MIN.
 *
 * Layouts (all C-contiguous, float32 unless stated):
 *   ids (E,) int32       flat instance ids c * N + n, grouped by tile, front to back per tile
 *   starts, counts (C * tiles_y * tiles_x,) int64: each tile's list in ids
 *   means2d (M, 2), conics (M, 3), opac (M,), feats (M, F): per instance (M = C * N)
 *   out (C, H, W, F) = sum_k w_k f_k,  trans (C, H, W) = final transmittance,
 *   last (C, H, W) int32: entries of the tile's list the pixel went through (backward bound).
 * A tile's pixels advance together through its list (the loops over pixels vectorise; a tile stops
 * when all its pixels are done), forward front to back and backward back to front, as gsplat's CUDA
 * blocks do. A Gaussian only visits the blocks of rows it can reach above the alpha cut (exact:
 * reach_rows). Backward writes per-entry gradients (E, 6 + F) = [d mean x, d mean y, d a, d b, d c,
 * d o, d f...] without races (an entry belongs to one tile, a tile to one thread), then reduces them
 * per instance in entry order, so results do not depend on the number of threads.
 *
 * Threads: plain pthreads taking tiles from a shared counter (no OpenMP runtime beside torch's);
 * the pixel loops' sums are vectorised with `omp simd` (-fopenmp-simd: compile-time only), so their
 * order is fixed by the build, not by the machine's load.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define ALPHA_MIN (1.0f / 255.0f)
#define ALPHA_MAX 0.999f
#define T_MIN 1e-4f
#define MAX_FEATS 8
#define MAX_THREADS 64

typedef struct {
    const int32_t *ids;
    const int64_t *starts, *counts;
    const float *means2d, *conics, *opac, *feats;
    int n_feats, width, height, tile_size, tiles_x, tiles_y, n_tiles;
    /* forward outputs */
    float *out, *trans;
    int32_t *last;
    /* backward inputs / outputs */
    const float *grad_out, *grad_trans;
    float *grad_entries;
    int64_t next_tile; /* shared work counter */
} Job;

/* exp(x) for -30 <= x <= 0, within 1 ulp of exp() (Cephes' single-precision polynomial; checked on
 * a 1e-6 grid of [-30, 0]), written so the compiler vectorises the pixel loops. x is clamped into
 * that range: alpha = o exp(x) is clamped at 0.999 long before x = 0, and below -30 it is < 1e-13,
 * far under the 1/255 cut, while results stay normal floats (most pixel-Gaussian pairs lie there,
 * and denormal arithmetic is ~100x slower). */
static inline float exp_nonpos(float x) {
    x = x < -30.0f ? -30.0f : (x > 0.0f ? 0.0f : x);
    const float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    /* 2^n for n in [-44, 0] from the bits of -n (exact; selects and products vectorise) */
    const int32_t k = (int32_t)(-n);
    float scale = (k & 1) ? 0.5f : 1.0f;
    scale *= (k & 2) ? 0.25f : 1.0f;
    scale *= (k & 4) ? 0.0625f : 1.0f;
    scale *= (k & 8) ? 3.90625e-3f : 1.0f;
    scale *= (k & 16) ? 1.52587890625e-5f : 1.0f;
    scale *= (k & 32) ? 2.3283064365386963e-10f : 1.0f;
    return p * scale;
}

#define MAX_PIX 256 /* pixels of a tile (padded to whole LANES blocks): tile_size <= 16 */
#define LANES 16   /* pixels per vector block: tile sizes 4, 8, 16 give whole blocks */

typedef struct {
    float px[MAX_PIX], py[MAX_PIX];
    float ylo[MAX_PIX / LANES], yhi[MAX_PIX / LANES]; /* pixel-centre rows each block spans (ylo > yhi: none) */
    int n_pix;
} TilePixels;

/* How far from its mean (in pixel rows) a Gaussian can reach alpha > ALPHA_MIN: over dx, sigma is
 * smallest at 0.5 dy^2 det / a (det = ac - b^2), and alpha = o exp(-sigma) > ALPHA_MIN needs
 * sigma < log(o / ALPHA_MIN). Padded by 1 % and 0.05 px so float rounding in the lanes never reaches
 * past it; -1 when o <= ALPHA_MIN (never drawn), INFINITY for conics that are not positive definite
 * (or not finite: then the lanes decide as ever). Skipping a block of rows beyond this reach changes
 * nothing: its lanes would all take alpha <= ALPHA_MIN, i.e. no weight, no gradient, no state change. */
static inline float reach_rows(float a, float b, float c, float o) {
    if (o != o) return INFINITY;
    if (o <= ALPHA_MIN) return -1.0f;
    const float det = a * c - b * b;
    if (!(a > 0.0f) || !(det > 0.0f) || !(c > 0.0f)) return INFINITY;
    const float r2 = 2.0f * logf(o / ALPHA_MIN) * a / det;
    return r2 < INFINITY ? sqrtf(r2 * 1.02f) + 0.05f : INFINITY;
}

static int skip_rows = 1; /* 0: every block is evaluated (the specs compare both ways bit for bit) */

void ilrm_composite_skip_rows(int on) { skip_rows = on; }

/* Whether the block of rows [ylo, yhi] lies out of reach of a Gaussian at row my (every block does for
 * reach < 0: a Gaussian never drawn). */
static inline int out_of_reach(const TilePixels *tp, int block, float my, float reach) {
    return skip_rows && (reach < 0.0f || tp->ylo[block] > tp->yhi[block] || tp->ylo[block] - my > reach
                         || my - tp->yhi[block] > reach);
}

/* Pixel centres of a tile, padded to whole blocks of LANES; padding and off-image pixels are
 * placed far away (their alpha is below the cut). Returns the (camera, i0, j0) of the tile. */
static void tile_pixels(const Job *job, int64_t tile, TilePixels *tp, int *cam, int *i0, int *j0) {
    const int per_cam = job->tiles_x * job->tiles_y, ts = job->tile_size;
    const int rem = (int)(tile % per_cam);
    *cam = (int)(tile / per_cam);
    *i0 = (rem / job->tiles_x) * ts;
    *j0 = (rem % job->tiles_x) * ts;
    tp->n_pix = (ts * ts + LANES - 1) / LANES * LANES;
    for (int p = 0; p < tp->n_pix; p++) {
        const int i = *i0 + p / ts, j = *j0 + p % ts;
        const int inside = p < ts * ts && i < job->height && j < job->width;
        tp->px[p] = inside ? j + 0.5f : -1e4f; /* sigma ~1e8: alpha 0, no overflow */
        tp->py[p] = inside ? i + 0.5f : -1e4f;
    }
    for (int k = 0; k < tp->n_pix / LANES; k++) {
        tp->ylo[k] = INFINITY;
        tp->yhi[k] = -INFINITY;
        for (int p = k * LANES; p < (k + 1) * LANES; p++) {
            if (tp->px[p] < -1e3f) continue;
            tp->ylo[k] = tp->py[p] < tp->ylo[k] ? tp->py[p] : tp->ylo[k];
            tp->yhi[k] = tp->py[p] > tp->yhi[k] ? tp->py[p] : tp->yhi[k];
        }
    }
}

static inline int64_t pixel_index(const Job *job, int cam, int i0, int j0, int p) {
    const int ts = job->tile_size, i = i0 + p / ts, j = j0 + p % ts;
    if (p >= ts * ts || i >= job->height || j >= job->width) return -1;
    return ((int64_t)cam * job->height + i) * job->width + j;
}

static void forward_tile(Job *job, int64_t tile) {
    const int nf = job->n_feats;
    const int64_t start = job->starts[tile], count = job->counts[tile];
    TilePixels tp;
    int cam, i0, j0;
    tile_pixels(job, tile, &tp, &cam, &i0, &j0);
    const int np = tp.n_pix;
    float t[MAX_PIX], acc[MAX_FEATS][MAX_PIX], live[MAX_PIX];
    int32_t last[MAX_PIX];
    int n_live = 0;
    for (int p = 0; p < np; p++) {
        t[p] = 1.0f;
        live[p] = tp.px[p] > -1e3f ? 1.0f : 0.0f;
        n_live += tp.px[p] > -1e3f;
        last[p] = 0;
    }
    memset(acc, 0, sizeof(acc));
    for (int64_t e = 0; e < count && n_live > 0; e++) {
        const int32_t g = job->ids[start + e];
        const float *m = job->means2d + 2 * (int64_t)g, *q = job->conics + 3 * (int64_t)g;
        const float mx = m[0], my = m[1], a = q[0], b = q[1], c = q[2], o = job->opac[g];
        const float *f = job->feats + (int64_t)nf * g;
        const float reach = reach_rows(a, b, c, o);
        int stops = 0;
        float w[LANES];
        for (int p0 = 0; p0 < np; p0 += LANES) {
            if (out_of_reach(&tp, p0 / LANES, my, reach)) continue;
#pragma omp simd reduction(+ : stops)
            for (int p = p0; p < p0 + LANES; p++) {
                const float dx = tp.px[p] - mx, dy = tp.py[p] - my;
                const float sigma = 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy;
                float alpha = o * exp_nonpos(-sigma);
                alpha = alpha < ALPHA_MAX ? alpha : ALPHA_MAX;
                const float next_t = t[p] * (1.0f - alpha);
                const float use = (alpha > ALPHA_MIN && live[p] > 0.0f) ? 1.0f : 0.0f;
                const float stop = (use > 0.0f && next_t <= T_MIN) ? 1.0f : 0.0f;
                live[p] = stop > 0.0f ? 0.0f : live[p];
                const float take = use * (1.0f - stop);
                w[p - p0] = take * alpha * t[p];
                t[p] = take > 0.0f ? next_t : t[p];
                last[p] = take > 0.0f ? (int32_t)(e + 1) : last[p];
                stops += stop > 0.0f;
            }
            for (int k = 0; k < nf; k++) {
                const float fk = f[k];
                for (int l = 0; l < LANES; l++) acc[k][p0 + l] += w[l] * fk;
            }
        }
        n_live -= stops;
    }
    for (int p = 0; p < np; p++) {
        const int64_t pix = pixel_index(job, cam, i0, j0, p);
        if (pix < 0) continue;
        for (int k = 0; k < nf; k++) job->out[pix * nf + k] = acc[k][p];
        job->trans[pix] = t[p];
        job->last[pix] = last[p];
    }
}

static void backward_tile(Job *job, int64_t tile) {
    const int nf = job->n_feats, ng = 6 + nf;
    const int64_t start = job->starts[tile];
    TilePixels tp;
    int cam, i0, j0;
    tile_pixels(job, tile, &tp, &cam, &i0, &j0);
    const int np = tp.n_pix;
    float t[MAX_PIX], after[MAX_PIX], tail[MAX_PIX], go[MAX_FEATS][MAX_PIX];
    int32_t last[MAX_PIX], max_last = 0;
    for (int p = 0; p < np; p++) {
        const int64_t pix = pixel_index(job, cam, i0, j0, p);
        last[p] = pix < 0 ? 0 : job->last[pix];
        t[p] = pix < 0 ? 1.0f : job->trans[pix];
        tail[p] = pix < 0 ? 0.0f : job->grad_trans[pix] * t[p]; /* dL/dT_final * T_final */
        after[p] = 0.0f; /* sum over later Gaussians of w_m (f_m . g) */
        for (int k = 0; k < nf; k++) go[k][p] = pix < 0 ? 0.0f : job->grad_out[pix * nf + k];
        max_last = last[p] > max_last ? last[p] : max_last;
    }
    for (int64_t e = (int64_t)max_last - 1; e >= 0; e--) {
        const int32_t g = job->ids[start + e];
        const float *m = job->means2d + 2 * (int64_t)g, *q = job->conics + 3 * (int64_t)g;
        const float mx = m[0], my = m[1], a = q[0], b = q[1], c = q[2], o = job->opac[g];
        const float *f = job->feats + (int64_t)nf * g;
        /* per-lane partial sums (summed in a fixed order below): [mean x, mean y, a, b, c, o, f...] */
        float lane[6 + MAX_FEATS][LANES];
        memset(lane, 0, sizeof(float) * (size_t)ng * LANES);
        const float reach = reach_rows(a, b, c, o);
        const int32_t ei = (int32_t)e;
        for (int p0 = 0; p0 < np; p0 += LANES) {
            if (out_of_reach(&tp, p0 / LANES, my, reach)) continue;
            float fg[LANES], w[LANES];
            for (int l = 0; l < LANES; l++) fg[l] = 0.0f;
            for (int k = 0; k < nf; k++) {
                const float fk = f[k];
                for (int l = 0; l < LANES; l++) fg[l] += fk * go[k][p0 + l];
            }
#pragma omp simd
            for (int l = 0; l < LANES; l++) {
                const int p = p0 + l;
                const float dx = tp.px[p] - mx, dy = tp.py[p] - my;
                const float sigma = 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy;
                const float raw = o * exp_nonpos(-sigma);
                const float alpha = raw < ALPHA_MAX ? raw : ALPHA_MAX;
                /* masks as 0/1 floats (a chain of && defeats the vectoriser here) */
                const float listed = ei < last[p] ? 1.0f : 0.0f;
                const float use = listed * (alpha > ALPHA_MIN ? 1.0f : 0.0f);
                const float free = raw < ALPHA_MAX ? 1.0f : 0.0f; /* not clamped */
                const float keep = 1.0f - alpha;
                const float t_before = use > 0.0f ? t[p] / keep : t[p];
                w[l] = use * alpha * t_before;
                const float d_alpha = use * (t_before * fg[l] - (after[p] + tail[p]) / keep);
                after[p] += w[l] * fg[l];
                t[p] = t_before;
                /* clamped alphas pass no gradient; d alpha / d sigma = -alpha, d alpha / d o = alpha / o */
                const float d_sigma = -free * d_alpha * alpha;
                lane[0][l] -= d_sigma * (a * dx + b * dy); /* d sigma / d mean = -(A d) */
                lane[1][l] -= d_sigma * (b * dx + c * dy);
                lane[2][l] += d_sigma * 0.5f * dx * dx;
                lane[3][l] += d_sigma * dx * dy;
                lane[4][l] += d_sigma * 0.5f * dy * dy;
                lane[5][l] += free * d_alpha * alpha / o;
            }
            for (int k = 0; k < nf; k++)
                for (int l = 0; l < LANES; l++) lane[6 + k][l] += w[l] * go[k][p0 + l];
        }
        float *ge = job->grad_entries + (start + e) * ng;
        for (int k = 0; k < ng; k++) {
            float sum = 0.0f;
            for (int l = 0; l < LANES; l++) sum += lane[k][l];
            ge[k] = sum;
        }
    }
}

typedef struct {
    Job *job;
    int backward;
} Worker;

static void *run_worker(void *arg) {
    Worker *w = (Worker *)arg;
    for (;;) {
        const int64_t tile = __atomic_fetch_add(&w->job->next_tile, 1, __ATOMIC_RELAXED);
        if (tile >= w->job->n_tiles) return NULL;
        if (w->job->counts[tile] == 0 && w->backward) continue;
        if (w->backward)
            backward_tile(w->job, tile);
        else
            forward_tile(w->job, tile);
    }
}

static void run_tiles(Job *job, int backward, int n_threads) {
    pthread_t threads[MAX_THREADS];
    Worker worker = {job, backward};
    int started = 0;
    if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;
    job->next_tile = 0;
    for (int k = 1; k < n_threads; k++)
        if (pthread_create(&threads[started], NULL, run_worker, &worker) == 0) started++;
    run_worker(&worker);
    for (int k = 0; k < started; k++) pthread_join(threads[k], NULL);
}

/* Returns 0, -1 when n_feats is out of range, -2 when a tile has more than MAX_PIX pixels. */
int ilrm_composite_forward(const int32_t *ids, const int64_t *starts, const int64_t *counts, const float *means2d,
                           const float *conics, const float *opac, const float *feats, int n_feats,
                           const int *geometry, float *out, float *trans, int32_t *last, int n_threads) {
    /* geometry = {n_cams, width, height, tile_size, tiles_x, tiles_y} */
    if (n_feats < 1 || n_feats > MAX_FEATS) return -1;
    if (geometry[3] < 1 || geometry[3] * geometry[3] > MAX_PIX) return -2;
    Job job = {ids, starts, counts, means2d, conics, opac, feats, n_feats, geometry[1], geometry[2], geometry[3],
               geometry[4], geometry[5], geometry[0] * geometry[4] * geometry[5], out, trans, last,
               NULL, NULL, NULL, 0};
    run_tiles(&job, 0, n_threads);
    return 0;
}

/* grad_entries (E, 6 + F) and grad_inst (M, 6 + F) must be zeroed. Returns as the forward. */
int ilrm_composite_backward(const int32_t *ids, const int64_t *starts, const int64_t *counts, const float *means2d,
                            const float *conics, const float *opac, const float *feats, int n_feats,
                            const int *geometry, const float *trans, const int32_t *last, const float *grad_out,
                            const float *grad_trans, float *grad_entries, int64_t n_entries, float *grad_inst,
                            int n_threads) {
    if (n_feats < 1 || n_feats > MAX_FEATS) return -1;
    if (geometry[3] < 1 || geometry[3] * geometry[3] > MAX_PIX) return -2;
    Job job = {ids, starts, counts, means2d, conics, opac, feats, n_feats, geometry[1], geometry[2], geometry[3],
               geometry[4], geometry[5], geometry[0] * geometry[4] * geometry[5], NULL, (float *)trans,
               (int32_t *)last, grad_out, grad_trans, grad_entries, 0};
    run_tiles(&job, 1, n_threads);
    const int ng = 6 + n_feats;
    for (int64_t e = 0; e < n_entries; e++) {
        float *dst = grad_inst + (int64_t)ids[e] * ng;
        const float *src = grad_entries + e * ng;
        for (int k = 0; k < ng; k++) dst[k] += src[k];
    }
    return 0;
}

/* Tile lists by a stable counting sort. Entries come in the order given (each camera's visible
 * Gaussians front to back), so every tile's list stays front to back.
 *   ids (K,) int32 flat instance ids; tile0 (K,) int64 first tile id of each instance's camera
 *   (camera * tiles_y * tiles_x); x0, x1, y0, y1 (K,) int32 tile rectangle [x0, x1) x [y0, y1);
 *   counts (n_tiles,) int64 zeroed -> entries per tile; cursor (n_tiles,) int64 scratch;
 *   out (E,) int32 -> ids grouped by tile, E = sum of the rectangles' areas (the caller's).
 * Returns the number of entries written (E). */
int64_t ilrm_bin_tiles(const int32_t *ids, const int64_t *tile0, const int32_t *x0, const int32_t *x1,
                       const int32_t *y0, const int32_t *y1, int64_t n_inst, int tiles_x, int64_t n_tiles,
                       int64_t *counts, int64_t *cursor, int32_t *out) {
    for (int64_t i = 0; i < n_inst; i++)
        for (int y = y0[i]; y < y1[i]; y++)
            for (int x = x0[i]; x < x1[i]; x++) counts[tile0[i] + (int64_t)y * tiles_x + x]++;
    /* cursor: running write position of each tile, starting at its exclusive prefix sum */
    int64_t run = 0;
    for (int64_t t = 0; t < n_tiles; t++) {
        cursor[t] = run;
        run += counts[t];
    }
    for (int64_t i = 0; i < n_inst; i++)
        for (int y = y0[i]; y < y1[i]; y++)
            for (int x = x0[i]; x < x1[i]; x++) out[cursor[tile0[i] + (int64_t)y * tiles_x + x]++] = ids[i];
    return run;
}

