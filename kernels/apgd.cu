// Batched APGD-L∞ (docs/apgd.md, mirrors src/attack/apgd/run.rs) with per-sample
// state in device memory, and the attack losses (CE, DLR) with their logit gradients
// (mirrors src/attack/loss.rs). Rows that are fooled are frozen by `active[r] = 0` instead
// of compacted; every kernel skips inactive rows.

#define DLR_EPS 1e-12f

// Feasible interval per element: [max(x−ε, min(lo, x)), min(x+ε, max(hi, x))];
// box_mode 0 = none, 1 = unit box, 2 = per-dimension range (lo/hi of length d).
extern "C" __global__ void apgd_feasible_f32(const float* __restrict__ x, long long n, int d,
                                             float eps, int box_mode,
                                             const float* __restrict__ lo,
                                             const float* __restrict__ hi,
                                             float* __restrict__ lower,
                                             float* __restrict__ upper) {
    GRID_STRIDE(e, n * d) {
        int j = (int)(e % d);
        float xv = x[e];
        float bl = -F32_INF, bu = F32_INF;
        if (box_mode == 1) { bl = 0.0f; bu = 1.0f; }
        if (box_mode == 2) { bl = lo[j]; bu = hi[j]; }
        lower[e] = fmaxf(xv - eps, fminf(bl, xv));
        upper[e] = fminf(xv + eps, fmaxf(bu, xv));
    }
}

// x ← clamp(x, lower, upper) (start point projection).
extern "C" __global__ void apgd_project_f32(float* __restrict__ x,
                                            const float* __restrict__ lower,
                                            const float* __restrict__ upper, long long len) {
    GRID_STRIDE(e, len) x[e] = fminf(fmaxf(x[e], lower[e]), upper[e]);
}

// §4.3 steps 1–4 for active rows: z = P(x + η·sign g); x' = P(x + a(z − x) + (1 − a)(x − x_prev)).
extern "C" __global__ void apgd_step_f32(float* __restrict__ x_adv, float* __restrict__ x_prev,
                                         const float* __restrict__ g,
                                         const float* __restrict__ lower,
                                         const float* __restrict__ upper,
                                         const float* __restrict__ eta,
                                         const int* __restrict__ active, long long n, int d,
                                         float a) {
    GRID_STRIDE(e, n * d) {
        long long r = e / d;
        if (!active[r]) continue;
        float xi = x_adv[e], m = xi - x_prev[e], gv = g[e];
        x_prev[e] = xi;
        float gs = gv > 0.0f ? 1.0f : (gv < 0.0f ? -1.0f : 0.0f);
        float lo = lower[e], up = upper[e];
        float z = fminf(fmaxf(xi + eta[r] * gs, lo), up);
        float v = xi + (z - xi) * a + m * (1.0f - a);
        x_adv[e] = fminf(fmaxf(v, lo), up);
    }
}

// Step 5–7 bookkeeping, one block per row: hist[r, it] = l; if l > l_best (strict, Q9) copy
// x_adv/g into x_best/g_best; g ← g_new; a row whose prediction differs from its label is
// fooled: x_best_adv ← x_adv, active ← 0.
extern "C" __global__ void apgd_update_f32(const float* __restrict__ x_adv,
                                           const float* __restrict__ g_new, float* __restrict__ g,
                                           const float* __restrict__ l, const int* __restrict__ pred,
                                           const int* __restrict__ y, float* __restrict__ x_best,
                                           float* __restrict__ g_best, float* __restrict__ l_best,
                                           float* __restrict__ x_best_adv,
                                           int* __restrict__ active, int* __restrict__ fooled,
                                           float* __restrict__ hist, int n_iter, int it,
                                           long long n, int d) {
    const long long r = blockIdx.x;
    if (r >= n || !active[r]) return;
    const float lv = l[r];
    const bool better = lv > l_best[r];
    const bool fool = pred[r] != y[r];
    const long long base = r * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float xa = x_adv[base + j], gv = g_new[base + j];
        if (better) { x_best[base + j] = xa; g_best[base + j] = gv; }
        g[base + j] = gv;
        if (fool) x_best_adv[base + j] = xa;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        if (it >= 0) hist[r * n_iter + it] = lv;
        if (better) l_best[r] = lv;
        if (fool) { fooled[r] = 1; active[r] = 0; }
    }
}

// §4.4 checkpoint after iteration i with interval k, one block per active row: decide
// (condition 1: ≤ ρ·k increases among the last k steps, index −1 wrapping like Python, Q3;
// condition 2: not reduced last time and no improvement, Q9), then halve η and restore
// x_best/g_best where flagged (x_prev untouched, Q4).
extern "C" __global__ void apgd_checkpoint_f32(const float* __restrict__ hist, int n_iter, int i,
                                               int k, float rho, const float* __restrict__ l_best,
                                               float* __restrict__ l_best_last,
                                               int* __restrict__ reduced_last,
                                               float* __restrict__ eta, float* __restrict__ x_adv,
                                               float* __restrict__ g,
                                               const float* __restrict__ x_best,
                                               const float* __restrict__ g_best,
                                               const int* __restrict__ active, long long n, int d) {
    __shared__ int flag;
    const long long r = blockIdx.x;
    if (r >= n || !active[r]) return;
    if (threadIdx.x == 0) {
        const float* h = hist + r * n_iter;
        int incr = 0;
        for (int s = 0; s < k; ++s) {
            int a = ((i - s) % n_iter + n_iter) % n_iter;
            int b = ((i - s - 1) % n_iter + n_iter) % n_iter;
            if (h[a] > h[b]) ++incr;
        }
        bool c1 = (double)incr <= (double)k * (double)rho;
        bool c2 = !reduced_last[r] && l_best_last[r] >= l_best[r];
        flag = (c1 || c2) ? 1 : 0;
    }
    __syncthreads();
    const int f = flag;
    if (f) {
        const long long base = r * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            x_adv[base + j] = x_best[base + j];
            g[base + j] = g_best[base + j];
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        reduced_last[r] = f;
        l_best_last[r] = l_best[r];
        if (f) eta[r] *= 0.5f;
    }
}

// Cross-entropy per row (thread per row): loss = lse − z_y, grad = softmax − onehot.
extern "C" __global__ void loss_ce_f32(const float* __restrict__ z, const int* __restrict__ y,
                                       float* __restrict__ loss, float* __restrict__ grad,
                                       long long rows, int K) {
    GRID_STRIDE(r, rows) {
        const float* zr = z + r * K;
        float m = -F32_INF;
        for (int j = 0; j < K; ++j) m = fmaxf(m, zr[j]);
        float s = 0.0f;
        for (int j = 0; j < K; ++j) s += expf(zr[j] - m);
        float lse = m + logf(s);
        int yr = y[r];
        loss[r] = lse - zr[yr];
        if (grad) {
            for (int j = 0; j < K; ++j) grad[r * K + j] = expf(zr[j] - lse) - (j == yr ? 1.0f : 0.0f);
        }
    }
}

// Untargeted DLR per row (thread per row, K >= 3): −(z_y − max_{i≠y} z_i)/(z_π1 − z_π3 + 1e-12),
// ties broken by the lower index first (same rule as the CPU).
extern "C" __global__ void loss_dlr_f32(const float* __restrict__ z, const int* __restrict__ y,
                                        float* __restrict__ loss, float* __restrict__ grad,
                                        long long rows, int K) {
    GRID_STRIDE(r, rows) {
        const float* zr = z + r * K;
        int t0 = -1, t1 = -1, t2 = -1;
        for (int j = 0; j < K; ++j) {
            float v = zr[j];
            if (t0 < 0 || v > zr[t0]) { t2 = t1; t1 = t0; t0 = j; }
            else if (t1 < 0 || v > zr[t1]) { t2 = t1; t1 = j; }
            else if (t2 < 0 || v > zr[t2]) { t2 = j; }
        }
        int yr = y[r];
        int other = (t0 == yr) ? t1 : t0;
        float num = zr[yr] - zr[other];
        float den = zr[t0] - zr[t2] + DLR_EPS;
        loss[r] = -num / den;
        if (grad) {
            float* gr = grad + r * K;
            for (int j = 0; j < K; ++j) gr[j] = 0.0f;
            float inv = 1.0f / den, q = num * inv * inv;
            gr[yr] -= inv;
            gr[other] += inv;
            gr[t0] += q;
            gr[t2] -= q;
        }
    }
}
