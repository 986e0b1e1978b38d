/*
 * The tokenizers' inputs, built in one pass: every grid point's ray channels (and, for the image
 * tokenizer, its pixel's RGB mapped from [0, 1] to [-1, 1]), written straight into patchify's token
 * order (float32, CPU, forward only).
 *
 * Twins: ``fused_tokens.image_token_input`` (image tokens: every pixel) and the viewpoint tokens'
 * ``patchify(ray_features(camera_rays(..., stride)))`` (a grid of every stride-th pixel, no RGB),
 * compared in ``test/model/test_model_native.py``.
 * Output (N, GH/p, GW/p, p, p, C), C = R (+ 3 with RGB), grid points ordered (patch row, patch column,
 * row in patch, column in patch), per point (rgb, rays) or (rays, rgb). Grid point (x, y) sits at the
 * pixel centre (u, v) = ((x + 0.5) s, (y + 0.5) s) for stride s. Rays come from six rows per view
 * (``rows`` (N, 6, 3), see ``ray_rows``): raw = rows @ (u, v, 1); the direction is raw[dir .. dir + 3)
 * and all six are divided by its length. With an origin (N, 3) the ray channels are (origin, raw / |d|)
 * (9 channels), else raw / |d| (6).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const float *rgb, *rows, *origin;   /* rgb (N, 3, GH, GW) or NULL */
    float *out;
    int H, W, p, stride, dir, rgb_first; /* H, W: the grid's size */
} Tokens;

#define MAX_PATCH 64

/* Image n, patch row ty: p rows of grid points, W columns each. Per run of p pixels (one row of one patch) the
   arithmetic runs over arrays of the p pixels (vectorisable), then the channels are interleaved. */
static void token_row(const Tokens *T, int n, int ty) {
    const int H = T->H, W = T->W, p = T->p, R = T->origin ? 9 : 6, C = (T->rgb ? 3 : 0) + R;
    const float *restrict m = T->rows + (int64_t)n * 18;
    const float *restrict img = T->rgb ? T->rgb + (int64_t)n * 3 * H * W : NULL;
    const int c_rgb = T->rgb_first ? 0 : R, c_ray = T->rgb && T->rgb_first ? 3 : 0, c_raw = c_ray + (T->origin ? 3 : 0);
    const float s = (float)T->stride;
    const int dir = T->dir;
    float org[3] = {0.0f, 0.0f, 0.0f};
    if (T->origin)
        for (int c = 0; c < 3; c++) org[c] = T->origin[n * 3 + c];
    float mu[6], mv[6], m1[6];
    for (int c = 0; c < 6; c++) { mu[c] = m[3 * c]; mv[c] = m[3 * c + 1]; m1[c] = m[3 * c + 2]; }
    float raw[6][MAX_PATCH], rgb[3][MAX_PATCH], inv[MAX_PATCH];
    float *restrict out = T->out + ((int64_t)n * H + (int64_t)ty * p) * W * C;  /* this patch row's first pixel */
    for (int tx = 0; tx < W / p; tx++)
        for (int py = 0; py < p; py++) {
            const int y = ty * p + py, x0 = tx * p;
            const float v = ((float)y + 0.5f) * s;
            for (int c = 0; c < 6; c++) {
                const float base = mv[c] * v + m1[c];
                for (int px = 0; px < p; px++) raw[c][px] = mu[c] * (((float)(x0 + px) + 0.5f) * s) + base;
            }
            for (int px = 0; px < p; px++)
                inv[px] = 1.0f / sqrtf(raw[dir][px] * raw[dir][px] + raw[dir + 1][px] * raw[dir + 1][px]
                                       + raw[dir + 2][px] * raw[dir + 2][px]);
            for (int c = 0; c < 3 && img; c++) {
                const float *restrict row = img + ((int64_t)c * H + y) * W + x0;
                for (int px = 0; px < p; px++) rgb[c][px] = 2.0f * row[px] - 1.0f;
            }
            float *restrict o = out + (int64_t)(tx * p + py) * p * C;
            for (int px = 0; px < p; px++, o += C) {
                for (int c = 0; c < 3 && img; c++) o[c_rgb + c] = rgb[c][px];
                if (T->origin)
                    for (int c = 0; c < 3; c++) o[c_ray + c] = org[c];
                for (int c = 0; c < 6; c++) o[c_raw + c] = raw[c][px] * inv[px];
            }
        }
}

/*
 * rgb (N, 3, H, W) in [0, 1] or NULL; rows (N, 6, 3); origin (N, 3) or NULL; out (N, H/p, W/p, p, p, C) for a
 * grid of H x W points spaced ``stride`` pixels apart. dir: index of the direction's first row (0 or 3).
 * Returns 0, or -1 for sizes it cannot take.
 */
int ilrm_ray_tokens(const float *rgb, const float *rows, const float *origin, float *out, int N, int H, int W,
                    int p, int stride, int dir, int rgb_first, int n_threads) {
    if (N <= 0 || p <= 0 || p > MAX_PATCH || H % p || W % p || stride <= 0 || (dir != 0 && dir != 3)) return -1;
    Tokens T = {rgb, rows, origin, out, H, W, p, stride, dir, rgb_first};
    const int hh = H / p;
    if (n_threads < 1) n_threads = 1;
    #pragma omp parallel for schedule(static) collapse(2) num_threads(n_threads)
    for (int n = 0; n < N; n++)
        for (int ty = 0; ty < hh; ty++) token_row(&T, n, ty);
    return 0;
}
