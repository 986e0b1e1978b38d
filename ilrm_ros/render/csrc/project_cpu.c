/* EWA projection of 3-D Gaussians into pinhole cameras on the CPU, forward and backward.
 *
 * The native twin of ilrm_ros/render/projection.py's project() (the plain-torch reference it is
 * tested against; the maths and conventions are documented there): camera-space mean
 * p = R_v mu + t, M = R(q / |q|) diag(s), M_c = R_v M, the Jacobian at the mean clamped to
 * (1 + FOV_MARGIN) x the field of view, Sigma_2d = (J M_c)(J M_c)^T + eps2d I, conic = its
 * inverse, the opacity-aware box radius and the culling rules.
 *
 * Layouts (C-contiguous float32 unless stated): means (N, 3), quats (N, 4) w x y z, scales (N, 3),
 * opac (N,), viewmats (C, 4, 4) world -> camera, Ks (C, 3, 3);
 * out: means2d (C, N, 2), conics (C, N, 3), depths (C, N), radii (C, N, 2) int32, visible (C, N) uint8.
 * Backward: gradients of means2d, conics and depths in; gradients of means, quats and scales out
 * (cameras get none). Culled entries pass no gradient (the compositing never reads them).
 * Work is split over cameras x row blocks per thread; the backward sums over cameras per Gaussian
 * in camera order within one thread, so results do not depend on the number of threads.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>

#define ALPHA_MIN (1.0f / 255.0f)
#define EXTENT_SIGMA 3.33f
#define FOV_MARGIN 0.3f
#define NORM_FLOOR 1e-12f
#define MAX_THREADS 64

typedef struct {
    const float *means, *quats, *scales, *opac, *viewmats, *Ks;
    int64_t n;
    int n_cams, width, height;
    float near, far, eps2d;
    float *means2d, *conics, *depths;
    int32_t *radii;
    uint8_t *visible;
    const float *g_means2d, *g_conics, *g_depths;
    float *g_means, *g_quats, *g_scales;
    int n_threads;
} Proj;

/* Unit quaternion and its rotation matrix R (row-major 3 x 3); returns |q| (floored). */
static inline float quat_rot(const float *q, float *qn, float *R) {
    float norm = sqrtf(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    norm = norm > NORM_FLOOR ? norm : NORM_FLOOR;
    const float w = q[0] / norm, x = q[1] / norm, y = q[2] / norm, z = q[3] / norm;
    qn[0] = w, qn[1] = x, qn[2] = y, qn[3] = z;
    R[0] = 1 - 2 * (y * y + z * z), R[1] = 2 * (x * y - w * z), R[2] = 2 * (x * z + w * y);
    R[3] = 2 * (x * y + w * z), R[4] = 1 - 2 * (x * x + z * z), R[5] = 2 * (y * z - w * x);
    R[6] = 2 * (x * z - w * y), R[7] = 2 * (y * z + w * x), R[8] = 1 - 2 * (x * x + y * y);
    return norm;
}

typedef struct {
    float x, y, z;        /* camera-space mean (z = 1 where out of the near/far range) */
    float depth;          /* camera-space z as it is */
    float Mc[9];          /* R_v R(q) diag(s), row-major */
    float r0[3], r1[3];   /* rows of J M_c */
    float u0, u1, w0, w1; /* fx / z, fy / z, fx tx / z^2, fy ty / z^2 */
    float tqx, tqy;       /* clamped x / z, y / z */
    int free_x, free_y;   /* the clamp did not bind */
    float a, b, c, det;
    int in_range;
} Local;

static void local_frame(const Proj *P, int cam, int64_t i, const float *R, Local *L) {
    const float *V = P->viewmats + 16 * (int64_t)cam, *K = P->Ks + 9 * (int64_t)cam;
    const float *mu = P->means + 3 * i, *s = P->scales + 3 * i;
    L->x = V[0] * mu[0] + V[1] * mu[1] + V[2] * mu[2] + V[3];
    L->y = V[4] * mu[0] + V[5] * mu[1] + V[6] * mu[2] + V[7];
    const float zc = V[8] * mu[0] + V[9] * mu[1] + V[10] * mu[2] + V[11];
    L->depth = zc;
    L->in_range = zc > P->near && zc < P->far;
    L->z = L->in_range ? zc : 1.0f;
    for (int r = 0; r < 3; r++)
        for (int k = 0; k < 3; k++)
            L->Mc[3 * r + k] = (V[4 * r] * R[k] + V[4 * r + 1] * R[3 + k] + V[4 * r + 2] * R[6 + k]) * s[k];
    const float fx = K[0], fy = K[4], cx = K[2], cy = K[5], z = L->z;
    const float lxp = (P->width - cx) / fx + FOV_MARGIN * 0.5f * P->width / fx;
    const float lxn = cx / fx + FOV_MARGIN * 0.5f * P->width / fx;
    const float lyp = (P->height - cy) / fy + FOV_MARGIN * 0.5f * P->height / fy;
    const float lyn = cy / fy + FOV_MARGIN * 0.5f * P->height / fy;
    const float qx = L->x / z, qy = L->y / z;
    L->tqx = qx < -lxn ? -lxn : (qx > lxp ? lxp : qx);
    L->tqy = qy < -lyn ? -lyn : (qy > lyp ? lyp : qy);
    L->free_x = qx >= -lxn && qx <= lxp;
    L->free_y = qy >= -lyn && qy <= lyp;
    L->u0 = fx / z, L->u1 = fy / z;
    L->w0 = fx * (z * L->tqx) / (z * z), L->w1 = fy * (z * L->tqy) / (z * z);
    for (int k = 0; k < 3; k++) {
        L->r0[k] = L->u0 * L->Mc[k] - L->w0 * L->Mc[6 + k];
        L->r1[k] = L->u1 * L->Mc[3 + k] - L->w1 * L->Mc[6 + k];
    }
    L->a = L->r0[0] * L->r0[0] + L->r0[1] * L->r0[1] + L->r0[2] * L->r0[2] + P->eps2d;
    L->c = L->r1[0] * L->r1[0] + L->r1[1] * L->r1[1] + L->r1[2] * L->r1[2] + P->eps2d;
    L->b = L->r0[0] * L->r1[0] + L->r0[1] * L->r1[1] + L->r0[2] * L->r1[2];
    L->det = L->a * L->c - L->b * L->b;
}

static void forward_range(Proj *P, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
        float qn[4], R[9];
        quat_rot(P->quats + 4 * i, qn, R);
        const float op = P->opac[i];
        float ext = op / ALPHA_MIN > 1.0f ? sqrtf(2.0f * logf(op / ALPHA_MIN)) : 0.0f;
        ext = ext < EXTENT_SIGMA ? ext : EXTENT_SIGMA;
        for (int cam = 0; cam < P->n_cams; cam++) {
            Local L;
            local_frame(P, cam, i, R, &L);
            const float *K = P->Ks + 9 * (int64_t)cam;
            const int64_t ci = (int64_t)cam * P->n + i;
            const int ok_det = L.det > 0.0f;
            const float det = ok_det ? L.det : 1.0f;
            P->conics[3 * ci] = L.c / det, P->conics[3 * ci + 1] = -L.b / det, P->conics[3 * ci + 2] = L.a / det;
            const float mx = K[0] * L.x / L.z + K[2], my = K[4] * L.y / L.z + K[5];
            P->means2d[2 * ci] = mx, P->means2d[2 * ci + 1] = my;
            P->depths[ci] = L.depth;
            const float rx = ceilf(ext * sqrtf(L.a > 0 ? L.a : 0)), ry = ceilf(ext * sqrtf(L.c > 0 ? L.c : 0));
            const int on_image = mx + rx > 0 && mx - rx < P->width && my + ry > 0 && my - ry < P->height;
            const int vis = L.in_range && ok_det && rx > 0 && ry > 0 && on_image;
            P->visible[ci] = (uint8_t)vis;
            /* boxes wider than 1e7 px are cut to that before the int cast (the tile range clamps them to
             * the image anyway; a larger float would not fit an int32) */
            P->radii[2 * ci] = vis ? (int32_t)(rx < 1e7f ? rx : 1e7f) : 0;
            P->radii[2 * ci + 1] = vis ? (int32_t)(ry < 1e7f ? ry : 1e7f) : 0;
        }
    }
}

static void backward_range(Proj *P, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
        float qn[4], R[9], gM[9] = {0}, gmu[3] = {0};
        const float norm = quat_rot(P->quats + 4 * i, qn, R);
        for (int cam = 0; cam < P->n_cams; cam++) {
            const int64_t ci = (int64_t)cam * P->n + i;
            if (!P->visible[ci]) continue;
            Local L;
            local_frame(P, cam, i, R, &L);
            const float *V = P->viewmats + 16 * (int64_t)cam, *K = P->Ks + 9 * (int64_t)cam;
            const float fx = K[0], fy = K[4], z = L.z, x = L.x, y = L.y;
            /* conic = (c, -b, a) / det */
            const float *gc = P->g_conics + 3 * ci, D = L.det;
            const float gD = -(gc[0] * L.c - gc[1] * L.b + gc[2] * L.a) / (D * D);
            const float gA = gc[2] / D + gD * L.c, gB = -gc[1] / D - 2.0f * gD * L.b, gC = gc[0] / D + gD * L.a;
            float gr0[3], gr1[3];
            for (int k = 0; k < 3; k++) {
                gr0[k] = 2.0f * gA * L.r0[k] + gB * L.r1[k];
                gr1[k] = 2.0f * gC * L.r1[k] + gB * L.r0[k];
            }
            float gu0 = 0, gu1 = 0, gw0 = 0, gw1 = 0, gMc[9];
            for (int k = 0; k < 3; k++) {
                gMc[k] = L.u0 * gr0[k];
                gMc[3 + k] = L.u1 * gr1[k];
                gMc[6 + k] = -L.w0 * gr0[k] - L.w1 * gr1[k];
                gu0 += gr0[k] * L.Mc[k];
                gu1 += gr1[k] * L.Mc[3 + k];
                gw0 -= gr0[k] * L.Mc[6 + k];
                gw1 -= gr1[k] * L.Mc[6 + k];
            }
            /* u = f / z; w = f t / z with t = clamp(x / z): dt/dx = 1/z, dt/dz = -x/z^2 where the clamp is free */
            float gx = gw0 * fx / (z * z) * L.free_x, gy = gw1 * fy / (z * z) * L.free_y;
            float gz = -gu0 * fx / (z * z) - gu1 * fy / (z * z)
                       + gw0 * (-fx * L.tqx / (z * z) - (L.free_x ? fx * x / (z * z * z) : 0.0f))
                       + gw1 * (-fy * L.tqy / (z * z) - (L.free_y ? fy * y / (z * z * z) : 0.0f));
            const float *gm2 = P->g_means2d + 2 * ci;
            gx += gm2[0] * fx / z;
            gy += gm2[1] * fy / z;
            gz += -gm2[0] * fx * x / (z * z) - gm2[1] * fy * y / (z * z);
            gz += P->g_depths[ci];
            /* p = R_v mu + t; M_c = R_v M */
            const float gp[3] = {gx, gy, gz};
            for (int k = 0; k < 3; k++) gmu[k] += V[k] * gp[0] + V[4 + k] * gp[1] + V[8 + k] * gp[2];
            for (int r = 0; r < 3; r++)
                for (int k = 0; k < 3; k++)
                    gM[3 * r + k] += V[r] * gMc[k] + V[4 + r] * gMc[3 + k] + V[8 + r] * gMc[6 + k];
        }
        const float *s = P->scales + 3 * i;
        float gR[9];
        for (int k = 0; k < 3; k++) {
            P->g_scales[3 * i + k] = gM[k] * R[k] + gM[3 + k] * R[3 + k] + gM[6 + k] * R[6 + k];
            gR[k] = gM[k] * s[k], gR[3 + k] = gM[3 + k] * s[k], gR[6 + k] = gM[6 + k] * s[k];
        }
        const float w = qn[0], x = qn[1], y = qn[2], z = qn[3];
        float gq[4];
        gq[0] = 2 * (-z * gR[1] + y * gR[2] + z * gR[3] - x * gR[5] - y * gR[6] + x * gR[7]);
        gq[1] = 2 * (y * gR[1] + z * gR[2] + y * gR[3] - 2 * x * gR[4] - w * gR[5] + z * gR[6] + w * gR[7]
                     - 2 * x * gR[8]);
        gq[2] = 2 * (-2 * y * gR[0] + x * gR[1] + w * gR[2] + x * gR[3] + z * gR[5] - w * gR[6] + z * gR[7]
                     - 2 * y * gR[8]);
        gq[3] = 2 * (-2 * z * gR[0] - w * gR[1] + x * gR[2] + w * gR[3] - 2 * z * gR[4] + y * gR[5] + x * gR[6]
                     + y * gR[7]);
        const float dot = gq[0] * w + gq[1] * x + gq[2] * y + gq[3] * z;
        for (int k = 0; k < 4; k++) P->g_quats[4 * i + k] = (gq[k] - qn[k] * dot) / norm;
        for (int k = 0; k < 3; k++) P->g_means[3 * i + k] = gmu[k];
    }
}

typedef struct {
    Proj *P;
    int backward;
    int64_t i0, i1;
} Part;

static void *run_part(void *arg) {
    Part *t = (Part *)arg;
    if (t->backward)
        backward_range(t->P, t->i0, t->i1);
    else
        forward_range(t->P, t->i0, t->i1);
    return NULL;
}

static void run_parts(Proj *P, int backward) {
    int nt = P->n_threads < 1 ? 1 : (P->n_threads > MAX_THREADS ? MAX_THREADS : P->n_threads);
    if (P->n < 4096) nt = 1;
    pthread_t threads[MAX_THREADS];
    Part parts[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int k = 0; k < nt; k++) parts[k] = (Part){P, backward, P->n * k / nt, P->n * (k + 1) / nt};
    for (int k = 1; k < nt; k++) started[k] = pthread_create(&threads[k], NULL, run_part, &parts[k]) == 0;
    run_part(&parts[0]);
    for (int k = 1; k < nt; k++) {
        if (started[k])
            pthread_join(threads[k], NULL);
        else
            run_part(&parts[k]);
    }
}

/* sizes = {n, n_cams, width, height}; planes = {near, far, eps2d}. */
void ilrm_project_forward(const float *means, const float *quats, const float *scales, const float *opac,
                          const float *viewmats, const float *Ks, const int64_t *sizes, const float *planes,
                          float *means2d, float *conics, float *depths, int32_t *radii, uint8_t *visible,
                          int n_threads) {
    Proj P = {means, quats, scales, opac, viewmats, Ks, sizes[0], (int)sizes[1], (int)sizes[2],
              (int)sizes[3],
              planes[0], planes[1], planes[2], means2d, conics, depths, radii, visible,
              NULL, NULL, NULL, NULL, NULL, NULL, n_threads};
    run_parts(&P, 0);
}

void ilrm_project_backward(const float *means, const float *quats, const float *scales, const float *viewmats,
                           const float *Ks, const int64_t *sizes, const float *planes, const uint8_t *visible,
                           const float *g_means2d, const float *g_conics, const float *g_depths, float *g_means,
                           float *g_quats, float *g_scales, int n_threads) {
    Proj P = {means, quats, scales, NULL, viewmats, Ks, sizes[0], (int)sizes[1], (int)sizes[2], (int)sizes[3],
              planes[0], planes[1], planes[2], NULL, NULL, NULL, NULL, (uint8_t *)visible,
              g_means2d, g_conics, g_depths, g_means, g_quats, g_scales, n_threads};
    run_parts(&P, 1);
}
