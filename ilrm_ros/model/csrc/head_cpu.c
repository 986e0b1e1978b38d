/*
 * The Gaussian head, from the decoder's output to activated Gaussians, in one pass (float32, CPU,
 * forward only).
 *
 * Twin: ``fused_head.gaussians_torch`` (the decoder output's un-patchify, ``activate_offsets``,
 * ``rays_through_pixels``, the colour cells' average pooling and ``activate_gaussians``), compared
 * in ``test/model/test_model_native.py``. Per viewpoint-grid cell (x, y) of view n (grid GH x GW,
 * one cell per ``stride`` x ``stride`` pixels, the decoder's patches p x p cells):
 *
 *   r        = raw[n, token (y/p, x/p), cell (y%p, x%p)]           C channels: [offset 2] xyz 3 rgb 3
 *                                                                   scale 3 rotation 4 opacity 1
 *   offset   = sigmoid(r[0:2]) - 0.5                                (when predicted, else 0)
 *   (u, v)   = ((x + 0.5 + offset_x) s, (y + 0.5 + offset_y) s)    the ray's pixel
 *   d        = M (u, v, 1) / |M (u, v, 1)|                          M = R K^-1 of the view
 *   mean     = o + d * sigmoid(mean(xyz)) * max_depth
 *   scale    = exp(min(scale + scale_bias, scale_max_log))
 *   opacity  = sigmoid(opacity + opacity_bias)
 *   quat     = rotation / max(|rotation|, 1e-8)
 *   colour   = clamp(base + SH_C0 rgb, 0, 1), base = the cell's mean input colour (colour residual)
 *              or 0.5.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define SH_C0 0.28209479177387814f

typedef struct {
    const float *raw, *rows, *origin, *images;  /* images (N, 3, GH*s, GW*s) or NULL */
    float *means, *quats, *scales, *opac, *colors, *offsets;  /* offsets NULL unless predicted */
    int GH, GW, p, s, C;
    float max_depth, scale_bias, scale_max_log, opacity_bias;
} Head;

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Mean colour of cell (x, y) of image n: the s x s pixels it covers (what avg_pool2d(images, s) gives). */
static void cell_colour(const Head *T, int n, int x, int y, float out[3]) {
    const int s = T->s, W = T->GW * s, H = T->GH * s;
    for (int c = 0; c < 3; c++) {
        const float *plane = T->images + ((int64_t)n * 3 + c) * H * W;
        float sum = 0.0f;
        for (int dy = 0; dy < s; dy++)
            for (int dx = 0; dx < s; dx++) sum += plane[(int64_t)(y * s + dy) * W + x * s + dx];
        out[c] = sum / (float)(s * s);
    }
}

/* Row y of view n's grid. */
static void head_row(const Head *T, int n, int y) {
    const int GW = T->GW, p = T->p, C = T->C, tw = GW / p;
    const int i = T->offsets ? 2 : 0;
    const float *m = T->rows + (int64_t)n * 9, *o = T->origin + (int64_t)n * 3;
    const int64_t tokens = (int64_t)(T->GH / p) * tw;
    for (int x = 0; x < GW; x++) {
        const int64_t g = ((int64_t)n * T->GH + y) * GW + x;          /* the Gaussian's index */
        const float *r = T->raw + ((n * tokens + (int64_t)(y / p) * tw + x / p) * p * p + (y % p) * p + x % p) * C;
        float ox = 0.0f, oy = 0.0f;
        if (T->offsets) {
            ox = sigmoidf(r[0]) - 0.5f;
            oy = sigmoidf(r[1]) - 0.5f;
            T->offsets[2 * g] = ox;
            T->offsets[2 * g + 1] = oy;
        }
        const float u = ((float)x + 0.5f) * (float)T->s + ox * (float)T->s;
        const float v = ((float)y + 0.5f) * (float)T->s + oy * (float)T->s;
        float d[3];
        for (int c = 0; c < 3; c++) d[c] = m[3 * c] * u + m[3 * c + 1] * v + m[3 * c + 2];
        const float inv = 1.0f / sqrtf(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
        const float dist = sigmoidf((r[i] + r[i + 1] + r[i + 2]) / 3.0f) * T->max_depth;
        for (int c = 0; c < 3; c++) T->means[3 * g + c] = o[c] + d[c] * inv * dist;
        float base[3] = {0.5f, 0.5f, 0.5f};
        if (T->images) cell_colour(T, n, x, y, base);
        for (int c = 0; c < 3; c++) {
            const float col = base[c] + SH_C0 * r[i + 3 + c];
            T->colors[3 * g + c] = col < 0.0f ? 0.0f : (col > 1.0f ? 1.0f : col);
            const float ls = r[i + 6 + c] + T->scale_bias;
            T->scales[3 * g + c] = expf(ls < T->scale_max_log ? ls : T->scale_max_log);
        }
        const float *q = r + i + 9;
        float qn = sqrtf(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
        qn = qn > 1e-8f ? qn : 1e-8f;
        for (int c = 0; c < 4; c++) T->quats[4 * g + c] = q[c] / qn;
        T->opac[g] = sigmoidf(r[i + 13] + T->opacity_bias);
    }
}

/*
 * raw (N, GH/p * GW/p, p*p*C); rows (N, 3, 3) = R K^-1; origin (N, 3); images (N, 3, GH*s, GW*s) in [0, 1]
 * or NULL (no colour residual); outputs (N*GH*GW, k) for k = 3, 4, 3, 1, 3 and offsets (N*GH*GW, 2) or NULL
 * (no offsets: C = 14, else 16). params: max_depth, scale_bias, scale_max_log, opacity_bias.
 * Returns 0, or -1 for sizes it cannot take.
 */
int ilrm_gaussian_head(const float *raw, const float *rows, const float *origin, const float *images, float *means,
                       float *quats, float *scales, float *opac, float *colors, float *offsets, const int *sizes,
                       const float *params, int n_threads) {
    const int N = sizes[0], GH = sizes[1], GW = sizes[2], p = sizes[3], s = sizes[4], C = sizes[5];
    if (N <= 0 || p <= 0 || s <= 0 || GH % p || GW % p || C != (offsets ? 16 : 14)) return -1;
    Head T = {raw, rows, origin, images, means, quats, scales, opac, colors, offsets, GH, GW, p, s, C,
              params[0], params[1], params[2], params[3]};
    if (n_threads < 1) n_threads = 1;
    #pragma omp parallel for schedule(static) collapse(2) num_threads(n_threads)
    for (int n = 0; n < N; n++)
        for (int y = 0; y < GH; y++) head_row(&T, n, y);
    return 0;
}
