/*
 * Vectors of 16 floats for the model's CPU kernels (GCC/Clang vector extensions): AVX-512 registers
 * where the machine has them, pairs or quads of narrower registers elsewhere. Unaligned loads and
 * stores go through memcpy, which compiles to single vector moves.
 */
#ifndef ILRM_VEC16_H
#define ILRM_VEC16_H

#include <stdint.h>
#include <string.h>

#define LANES 16

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef int32_t i16v __attribute__((vector_size(64), aligned(4)));

static inline v16 ld(const float *p) { v16 r; memcpy(&r, p, sizeof r); return r; }
static inline void st(float *p, v16 v) { memcpy(p, &v, sizeof v); }
static inline v16 bc(float x) { return (v16){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
static inline v16 vmax(v16 a, v16 b) { i16v m = a < b; return (v16)(((i16v)a & ~m) | ((i16v)b & m)); }

/* Sum of the lanes, in lane order. */
static inline float hsum(v16 a) {
    float t = 0.0f;
    for (int l = 0; l < LANES; l++) t += a[l];
    return t;
}

#endif
