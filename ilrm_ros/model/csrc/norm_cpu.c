/*
 * LayerNorm over the last dimension, float32, CPU (forward only), on the calling thread.
 *
 * y = (x - mean) / sqrt(var + eps) * weight (+ bias), mean and biased variance of each row in two
 * passes (as torch computes them). Twin: ``torch.nn.functional.layer_norm`` (compared in
 * ``test/model/test_model_native.py``). The model's LayerNorms are small (a few hundred rows of
 * 256 channels, ~10-25 us on one core); torch's starts a parallel region for each, which under
 * OMP_WAIT_POLICY=PASSIVE (the package's default) first has to wake the sleeping worker.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));

static inline v16 ld(const float *p) { v16 r; memcpy(&r, p, sizeof r); return r; }
static inline void st(float *p, v16 v) { memcpy(p, &v, sizeof v); }
static inline v16 bc(float x) { return (v16){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }

static inline float hsum(v16 a) {
    float t = 0.0f;
    for (int l = 0; l < 16; l++) t += a[l];
    return t;
}

/* x, y (rows, D) contiguous; weight (D,) or NULL (ones); bias (D,) or NULL (zeros).
   Returns 0, or -1 for D not a positive multiple of 16. */
int ilrm_layer_norm(const float *x, float *y, const float *weight, const float *bias, int64_t rows, int D,
                    float eps) {
    if (D <= 0 || D % 16) return -1;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * D;
        float *yr = y + r * D;
        v16 s = bc(0.0f);
        for (int d = 0; d < D; d += 16) s += ld(xr + d);
        const float mean = hsum(s) / (float)D;
        v16 q = bc(0.0f);
        for (int d = 0; d < D; d += 16) { v16 c = ld(xr + d) - bc(mean); q += c * c; }
        const v16 inv = bc(1.0f / sqrtf(hsum(q) / (float)D + eps)), m = bc(mean);
        for (int d = 0; d < D; d += 16) {
            v16 t = (ld(xr + d) - m) * inv;
            if (weight) t *= ld(weight + d);
            if (bias) t += ld(bias + d);
            st(yr + d, t);
        }
    }
    return 0;
}
