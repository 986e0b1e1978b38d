/*
 * Multi-head attention with per-head RMS-normalised queries and keys, float32, CPU (forward only).
 *
 * What it computes, for every batch b, head h and query i (``D`` channels per head):
 *
 *     qn_i = q_i / sqrt(mean(q_i^2) + eps_q) * gq        (gq: the q norm weight, the k norm weight
 *     kn_j = k_j / sqrt(mean(k_j^2) + eps_k)              and the softmax scale, folded together)
 *     o_i  = sum_j softmax_j(qn_i . kn_j) v_j
 *
 * which is what ``model/fused.py`` computes with ``normed_heads`` and torch's SDPA (its reference
 * twin; ``test/model/test_model_native.py`` compares them). Inputs stay in the projections'
 * memory: row r of q, k, v and o is at ``base + b * batch_stride + r * row_stride + h * D`` with the
 * head's D channels contiguous, so no head split, normalised copy or merge is ever written.
 *
 * Work is split into tasks of QB = 32 queries of one (b, h). A task
 *   1. writes its normalised queries transposed (QT[d][i]: queries in vector lanes), scaled as vectors
 *      and moved in 16 x 16 blocks transposed in registers;
 *   2. computes the score block S^T[j][i] = ks_j * (k_j . qn_i) for all keys, RK keys x 32 queries
 *      per micro-tile, keeping the running maximum per query (lanes), so the softmax needs no
 *      horizontal reductions; ks_j = 1/rms(k_j), computed by each thread once per (b, h) it works on;
 *   3. exponentiates in place and sums per lane;
 *   4. accumulates o = P V in 4 queries x 64 channels register tiles, keys in blocks of JB.
 * Tasks write disjoint rows and every sum runs in a fixed order, so the result does not depend on
 * the number of threads. Threads: OpenMP, so that inside a torch process the kernel shares torch's
 * own thread pool (the library links libgomp.so.1, which resolves to the copy torch has loaded);
 * a separate pool would compete with torch's spinning workers for the same cores.
 *
 * Vectors are vec16.h's 16 floats (built and specified here with AVX-512 and for plain x86-64-v2;
 * the compiler lowers the same source for other targets, e.g. ARM NEON).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vec16.h"

#define QB 32   /* queries per task: two vectors of lanes */
#define RK 14   /* keys per score micro-tile (28 accumulators) */
#define JB 64   /* keys per block of the P V product (the block of V stays in L1) */

/* Keep a loaded vector in a register: without it GCC re-reads it from memory for every FMA that
   uses it (one load per FMA instead of one per key), which halves the P V product's rate. */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__AVX512F__)
#define KEEP(x) __asm__("" : "+v"(x))
#else
#define KEEP(x) ((void)0)
#endif

/* exp(x) for x <= 0 (scores minus their maximum), relative error ~2 ulp; x < -87 gives ~0. */
static inline v16 vexp(v16 x) {
    x = vmax(x, bc(-87.0f));
    v16 n = __builtin_convertvector(__builtin_convertvector(x * bc(1.44269504088896341f) - bc(0.5f), i16v), v16);
    v16 r = x - n * bc(0.693359375f);            /* x - n ln2 in two steps (Cody-Waite) */
    r = r - n * bc(-2.12194440e-4f);
    v16 p = bc(1.9875691500e-4f);                /* exp(r) on [-ln2/2, ln2/2]: degree-7 polynomial */
    p = p * r + bc(1.3981999507e-3f);
    p = p * r + bc(8.3334519073e-3f);
    p = p * r + bc(4.1665795894e-2f);
    p = p * r + bc(1.6666665459e-1f);
    p = p * r + bc(5.0000001201e-1f);
    p = p * r * r + r + bc(1.0f);
    i16v e = (__builtin_convertvector(n, i16v) + 127) << 23;   /* 2^n */
    return p * (v16)e;
}

static inline float inv_rms(const float *x, int D, float eps) {
    v16 a = bc(0.0f);
    for (int d = 0; d < D; d += LANES) { v16 t = ld(x + d); a += t * t; }
    return 1.0f / sqrtf(hsum(a) / (float)D + eps);
}

typedef struct {
    const float *q, *k, *v;
    float *o;
    int64_t sqb, sqn, skb, skn, svb, svn, sob, son;   /* batch and row strides (floats) */
    int B, H, Nq, Nk, D;
    const float *gq;
    float eps_q, eps_k;
} Job;

/* One stage of transpose16: the off-diagonal S x S blocks of the 2S x 2S blocks of rows a (top) and b
   (bottom) swap places; S is in the masks (LOs/HIs: LO8/HI8 for S = 8, ...). */
#define SWAP_STAGE(a, b, LO, HI)                                                                          \
    do {                                                                                                  \
        v16 lo_ = __builtin_shufflevector(a, b, LO), hi_ = __builtin_shufflevector(a, b, HI);             \
        a = lo_;                                                                                          \
        b = hi_;                                                                                          \
    } while (0)
#define LO8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define HI8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define LO4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define HI4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define LO2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define HI2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define LO1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define HI1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31

/* The 16 x 16 block r[0..15] (rows of 16 floats) transposed in registers: at scales 8, 4, 2, 1 the
   off-diagonal blocks swap places (64 two-vector shuffles in all). */
static inline void transpose16(v16 r[16]) {
    for (int i = 0; i < 8; i++) SWAP_STAGE(r[i], r[i + 8], LO8, HI8);
    for (int i = 0; i < 16; i += 8)
        for (int j = i; j < i + 4; j++) SWAP_STAGE(r[j], r[j + 4], LO4, HI4);
    for (int i = 0; i < 16; i += 4)
        for (int j = i; j < i + 2; j++) SWAP_STAGE(r[j], r[j + 2], LO2, HI2);
    for (int i = 0; i < 16; i += 2) SWAP_STAGE(r[i], r[i + 1], LO1, HI1);
}

/* Step 1: normalised queries of rows [i0, i0 + rows), transposed into QT[d * QB + i]; zero lanes past rows.
   Rows are scaled as vectors, then moved in 16 x 16 blocks transposed in registers. */
static void queries_transposed(const Job *J, int b, int h, int i0, int rows, float *QT) {
    const int D = J->D;
    const float *q0 = J->q + b * J->sqb + (int64_t)i0 * J->sqn + (int64_t)h * D;
    float s[QB];
    for (int i = 0; i < QB; i++) s[i] = i < rows ? inv_rms(q0 + (int64_t)i * J->sqn, D, J->eps_q) : 0.0f;
    for (int i16 = 0; i16 < QB; i16 += LANES)
        for (int d = 0; d < D; d += LANES) {
            v16 r[16];
            const v16 g = ld(J->gq + d);
            for (int i = 0; i < 16; i++)
                r[i] = i16 + i < rows ? ld(q0 + (int64_t)(i16 + i) * J->sqn + d) * (g * bc(s[i16 + i])) : bc(0.0f);
            transpose16(r);
            for (int dd = 0; dd < 16; dd++) st(QT + (d + dd) * QB + i16, r[dd]);
        }
}

/* Step 2, one micro-tile: ST rows [j, j + NK) = ks (k . qn) for NK keys x 32 queries (2 NK accumulators);
   the per-lane maxima m[0..1] take the new rows. NK is a constant in each expansion, so the
   accumulators stay in registers (28 of the 32 AVX-512 registers for NK = 14). */
#define SCORE_TILE(NAME, NK)                                                                              \
static void NAME(const Job *J, const float *K, const float *ks, const float *QT, float *ST, v16 m[2], int j) { \
    const int64_t skn = J->skn;                                                                           \
    v16 a0[NK], a1[NK];                                                                                   \
    for (int r = 0; r < NK; r++) { a0[r] = bc(0.0f); a1[r] = bc(0.0f); }                                  \
    const float *kr = K + (int64_t)j * skn;                                                               \
    for (int d = 0; d < J->D; d++) {                                                                      \
        v16 q0 = ld(QT + d * QB), q1 = ld(QT + d * QB + LANES);                                           \
        for (int r = 0; r < NK; r++) {                                                                    \
            v16 kk = bc(kr[r * skn + d]);                                                                 \
            a0[r] += kk * q0;                                                                             \
            a1[r] += kk * q1;                                                                             \
        }                                                                                                 \
    }                                                                                                     \
    v16 m0 = m[0], m1 = m[1];   /* locals: m may alias ST as far as the compiler knows */                \
    for (int r = 0; r < NK; r++) {                                                                        \
        v16 s = bc(ks[j + r]);                                                                            \
        v16 x0 = a0[r] * s, x1 = a1[r] * s;                                                               \
        st(ST + (j + r) * QB, x0);                                                                        \
        st(ST + (j + r) * QB + LANES, x1);                                                                \
        m0 = vmax(m0, x0);                                                                                \
        m1 = vmax(m1, x1);                                                                                \
    }                                                                                                     \
    m[0] = m0;                                                                                            \
    m[1] = m1;                                                                                            \
}
SCORE_TILE(score_tile, RK)
SCORE_TILE(score_tile4, 4)
SCORE_TILE(score_tile1, 1)

/* Step 2: ST[j * QB + i] = ks_j (k_j . qn_i) for all keys, in tiles of RK keys, then 4, then 1;
   returns the per-lane maxima in m[0..1]. */
static void scores(const Job *J, const float *K, const float *ks, const float *QT, float *ST, v16 m[2]) {
    int j = 0;
    m[0] = bc(-INFINITY);
    m[1] = bc(-INFINITY);
    for (; j + RK <= J->Nk; j += RK) score_tile(J, K, ks, QT, ST, m, j);
    for (; j + 4 <= J->Nk; j += 4) score_tile4(J, K, ks, QT, ST, m, j);
    for (; j < J->Nk; j++) score_tile1(J, K, ks, QT, ST, m, j);
}

/* Step 3: ST <- exp(ST - m) in place; inv[i] = 1 / sum_j ST[j][i]. */
static void softmax_weights(int Nk, const v16 m[2], float *ST, float *inv) {
    v16 s0 = bc(0.0f), s1 = bc(0.0f);
    for (int j = 0; j < Nk; j++) {
        v16 e0 = vexp(ld(ST + j * QB) - m[0]), e1 = vexp(ld(ST + j * QB + LANES) - m[1]);
        st(ST + j * QB, e0);
        st(ST + j * QB + LANES, e1);
        s0 += e0;
        s1 += e1;
    }
    for (int l = 0; l < LANES; l++) {
        inv[l] = 1.0f / s0[l];
        inv[LANES + l] = 1.0f / s1[l];
    }
}

/* Step 4, one tile: 4 queries (r0..r0+3 of the task) x 64 channels from dv, keys [jb, je).
   Partial sums live in OT[i * D + d] between key blocks; the last block scales by inv and writes o. */
static void pv_tile(const Job *J, const float *V, const float *ST, const float *inv, float *OT, float *out,
                    int r0, int rows, int dv, int jb, int je) {
    const int D = J->D;
    v16 a[4][4];
    float *ot = OT + r0 * D + dv;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) a[r][c] = jb == 0 ? bc(0.0f) : ld(ot + r * D + LANES * c);
    for (int j = jb; j < je; j++) {
        const float *vr = V + (int64_t)j * J->svn + dv;
        v16 v0 = ld(vr), v1 = ld(vr + LANES), v2 = ld(vr + 2 * LANES), v3 = ld(vr + 3 * LANES);
        KEEP(v0); KEEP(v1); KEEP(v2); KEEP(v3);
        const float *p = ST + j * QB + r0;
        for (int r = 0; r < 4; r++) {
            v16 w = bc(p[r]);
            a[r][0] += w * v0;
            a[r][1] += w * v1;
            a[r][2] += w * v2;
            a[r][3] += w * v3;
        }
    }
    if (je == J->Nk) {
        for (int r = 0; r < 4 && r0 + r < rows; r++) {
            v16 s = bc(inv[r0 + r]);
            for (int c = 0; c < 4; c++) st(out + (int64_t)(r0 + r) * J->son + dv + LANES * c, a[r][c] * s);
        }
    } else {
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++) st(ot + r * D + LANES * c, a[r][c]);
    }
}

/* Step 4 for the channels past the last full group of 64 (D not a multiple of 64), all keys at once:
   one query and one vector of 16 channels at a time. */
static void pv_rest(const Job *J, const float *V, const float *ST, const float *inv, float *out, int rows, int dv) {
    for (int r = 0; r < rows; r++)
        for (int d = dv; d < J->D; d += LANES) {
            v16 a = bc(0.0f);
            for (int j = 0; j < J->Nk; j++) a += bc(ST[j * QB + r]) * ld(V + (int64_t)j * J->svn + d);
            st(out + (int64_t)r * J->son + d, a * bc(inv[r]));
        }
}

/* Scratch of one thread: QT (D*QB), ST (Nk*QB), OT (D*QB), and the key factors ks (Nk) of (b, h) = ks_of. */
typedef struct {
    float *QT, *ST, *OT, *ks;
    int ks_of;
} Scratch;

/* One task: queries [qb * QB, qb * QB + QB) of (b, h). A thread's tasks come in order (static schedule),
   so it computes each (b, h)'s key factors once, when its first task of that pair starts. */
static void run_task(const Job *J, int task, Scratch *w) {
    const int nqb = (J->Nq + QB - 1) / QB;
    const int bh = task / nqb, b = bh / J->H, h = bh % J->H;
    const int i0 = (task % nqb) * QB, rows = J->Nq - i0 < QB ? J->Nq - i0 : QB;
    const int D = J->D, Nk = J->Nk;
    const float *K = J->k + b * J->skb + (int64_t)h * D, *V = J->v + b * J->svb + (int64_t)h * D;
    float *out = J->o + b * J->sob + (int64_t)i0 * J->son + (int64_t)h * D;
    float *QT = w->QT, *ST = w->ST, *OT = w->OT;
    v16 m[2];
    float inv[QB];
    if (w->ks_of != bh) {
        for (int j = 0; j < Nk; j++) w->ks[j] = inv_rms(K + (int64_t)j * J->skn, D, J->eps_k);
        w->ks_of = bh;
    }
    queries_transposed(J, b, h, i0, rows, QT);
    scores(J, K, w->ks, QT, ST, m);
    softmax_weights(Nk, m, ST, inv);
    const int d64 = D - D % (4 * LANES);
    for (int jb = 0; jb < Nk; jb += JB) {
        int je = jb + JB < Nk ? jb + JB : Nk;
        for (int r0 = 0; r0 < rows; r0 += 4)
            for (int dv = 0; dv < d64; dv += 4 * LANES) pv_tile(J, V, ST, inv, OT, out, r0, rows, dv, jb, je);
    }
    if (d64 < D) pv_rest(J, V, ST, inv, out, rows, d64);
}

/*
 * q (B, Nq, *), k and v (B, Nk, *), o (B, Nq, *): float32, head h's channels at [h*D, h*D + D) of a
 * row, contiguous. strides: {q batch, q row, k batch, k row, v batch, v row, o batch, o row} in floats.
 * gq (D,): query factor. Returns 0, -1 for unsupported sizes (D not a multiple of 16, no keys or
 * queries), -2 when scratch memory could not be allocated (o is then incomplete).
 */
int ilrm_attention_forward(const float *q, const float *k, const float *v, float *o, const int64_t *strides,
                           int B, int H, int Nq, int Nk, int D, const float *gq, float eps_q, float eps_k,
                           int n_threads) {
    if (D <= 0 || D % LANES || Nk <= 0 || Nq <= 0 || B <= 0 || H <= 0) return -1;
    Job J = {q, k, v, o, strides[0], strides[1], strides[2], strides[3], strides[4], strides[5], strides[6],
             strides[7], B, H, Nq, Nk, D, gq, eps_q, eps_k};
    const int tasks = B * H * ((Nq + QB - 1) / QB);
    int failed = 0;
    if (n_threads < 1) n_threads = 1;
    /* one parallel region and no barrier inside it: under OMP_WAIT_POLICY=PASSIVE every wait is a sleep */
    #pragma omp parallel num_threads(n_threads) reduction(| : failed)
    {
        Scratch w = {aligned_alloc(64, sizeof(float) * (size_t)D * QB), aligned_alloc(64, sizeof(float) * (size_t)Nk * QB),
                     aligned_alloc(64, sizeof(float) * (size_t)D * QB), malloc(sizeof(float) * (size_t)Nk), -1};
        int ok = w.QT && w.ST && w.OT && w.ks;
        #pragma omp for schedule(static) nowait
        for (int t = 0; t < tasks; t++)
            if (ok) run_task(&J, t, &w);
        failed |= !ok;
        free(w.QT);
        free(w.ST);
        free(w.OT);
        free(w.ks);
    }
    return failed ? -2 : 0;
}
