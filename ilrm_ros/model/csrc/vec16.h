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

/* Sum of the lanes as a tree (halves added until one lane is left): a fixed order, 4 dependent adds
   instead of 15. */
typedef float ilrm_v8 __attribute__((vector_size(32), aligned(4)));
typedef float ilrm_v4 __attribute__((vector_size(16), aligned(4)));
static inline float hsum(v16 a) {
    ilrm_v8 h = __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7)
              + __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
    ilrm_v4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
    return (q[0] + q[2]) + (q[1] + q[3]);
}

#endif
