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

#include "vec16.h"

/* x, y (rows, D) contiguous; weight (D,) or NULL (ones); bias (D,) or NULL (zeros).
   Returns 0, or -1 for D not a positive multiple of 16. */
int ilrm_layer_norm(const float *x, float *y, const float *weight, const float *bias, int64_t rows, int D,
                    float eps) {
    if (D <= 0 || D % LANES) return -1;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * D;
        float *yr = y + r * D;
        v16 s = bc(0.0f);
        for (int d = 0; d < D; d += LANES) s += ld(xr + d);
        const float mean = hsum(s) / (float)D;
        v16 q = bc(0.0f);
        for (int d = 0; d < D; d += LANES) { v16 c = ld(xr + d) - bc(mean); q += c * c; }
        const v16 inv = bc(1.0f / sqrtf(hsum(q) / (float)D + eps)), m = bc(mean);
        for (int d = 0; d < D; d += LANES) {
            v16 t = (ld(xr + d) - m) * inv;
            if (weight) t *= ld(weight + d);
            if (bias) t += ld(bias + d);
            st(yr + d, t);
        }
    }
    return 0;
}
