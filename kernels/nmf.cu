// Lee–Seung multiplicative updates for the Frobenius NNMF (V ≈ H·W; V n×p, H n×K, W K×p),
// mirroring src/nmf/mu.rs. The large products (HᵀV, VWᵀ, HᵀH, WWᵀ) come from gemm.cu; the
// kernels here fuse the small K×K Gram product into the update, so the denominator is never
// written to memory: one pass reads x, num and the Gram matrix (shared memory when
// `use_smem`) and writes the updated factor with the EPS floor. Results go to a second
// buffer (the update of an element reads its whole column / row of the old factor).

#define NMF_EPS 1e-10f

// W'[r,j] = W[r,j]·num[r,j] / (Σ_s G[r,s]·W[s,j] + EPS), G = HᵀH (K×K).
extern "C" __global__ void nmf_update_w_f32(const float* __restrict__ W,
                                            const float* __restrict__ num,
                                            const float* __restrict__ G, float* __restrict__ Wout,
                                            int K, int p, int use_smem) {
    extern __shared__ float gs[];
    const float* g = G;
    if (use_smem) {
        for (int t = threadIdx.x; t < K * K; t += blockDim.x) gs[t] = G[t];
        __syncthreads();
        g = gs;
    }
    GRID_STRIDE(e, (long long)K * p) {
        int r = (int)(e / p), j = (int)(e % p);
        float den = 0.0f;
        for (int s = 0; s < K; ++s) den = fmaf(g[r * K + s], W[(long long)s * p + j], den);
        Wout[e] = W[e] * num[e] / (den + NMF_EPS);
    }
}

// H'[i,r] = H[i,r]·num[i,r] / (Σ_s H[i,s]·G[s,r] + EPS), G = WWᵀ (K×K).
extern "C" __global__ void nmf_update_h_f32(const float* __restrict__ H,
                                            const float* __restrict__ num,
                                            const float* __restrict__ G, float* __restrict__ Hout,
                                            int n, int K, int use_smem) {
    extern __shared__ float gs[];
    const float* g = G;
    if (use_smem) {
        for (int t = threadIdx.x; t < K * K; t += blockDim.x) gs[t] = G[t];
        __syncthreads();
        g = gs;
    }
    GRID_STRIDE(e, (long long)n * K) {
        long long i = e / K;
        int r = (int)(e % K);
        const float* h = H + i * K;
        float den = 0.0f;
        for (int s = 0; s < K; ++s) den = fmaf(h[s], g[s * K + r], den);
        Hout[e] = H[e] * num[e] / (den + NMF_EPS);
    }
}

// partial[block] = Σ a∘b over a grid-stride share of the elements, in f64 (objective terms
// ‖V‖², ⟨H, VWᵀ⟩, ⟨HᵀH, WWᵀ⟩; the host sums the ≤ 1024 partials).
extern "C" __global__ void nmf_dot_partial_f32(const float* __restrict__ a,
                                               const float* __restrict__ b, long long len,
                                               double* __restrict__ partial) {
    __shared__ double scratch[32];
    double s = 0.0;
    GRID_STRIDE(e, len) s += (double)a[e] * (double)b[e];
    s = block_sum_f64(s, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Projection of rows on a fixed basis (src/nmf/project.rs, Frobenius): one block per row,
// thread r owns component r (blockDim.x >= K, a multiple of 32). B = VWᵀ (n×K), G = WWᵀ,
// vn[i] = ‖v_i‖², gsum = ΣG. The whole iteration with the per-row stopping rule runs in
// the kernel: init h = α·1 (α = max(Σ_r b_r / gsum, 0)), then up to max_iter updates,
// checking the row objective every `check_every` updates against `tol`.
extern "C" __global__ void nmf_project_frob_f32(const float* __restrict__ B,
                                                const float* __restrict__ G,
                                                const double* __restrict__ vn, double gsum,
                                                float* __restrict__ Hout, int n, int K,
                                                int max_iter, double tol, int check_every) {
    extern __shared__ float hs[];  // K floats
    __shared__ double scratch[32];
    __shared__ double sh_obj;
    const int i = blockIdx.x, r = threadIdx.x;
    if (i >= n) return;
    const bool own = r < K;
    const float b = own ? B[(long long)i * K + r] : 0.0f;
    double bs = block_sum_f64((double)b, scratch);
    if (threadIdx.x == 0) sh_obj = bs;
    __syncthreads();
    double alpha = gsum > 0.0 ? fmax(sh_obj / gsum, 0.0) : 0.0;
    float h = own ? (float)alpha : 0.0f;
    double last = 0.0;
    for (int t = 0; t <= max_iter; ++t) {
        if (own) hs[r] = h;
        __syncthreads();
        float hg = 0.0f;
        if (own)
            for (int s = 0; s < K; ++s) hg = fmaf(hs[s], G[s * K + r], hg);
        double term = own ? (double)h * (double)b * -2.0 + (double)h * (double)hg : 0.0;
        double tot = block_sum_f64(term, scratch);
        if (threadIdx.x == 0) sh_obj = fmax(0.5 * (vn[i] + tot), 0.0);
        __syncthreads();
        double obj = sh_obj;
        bool stop = (t == max_iter);
        if (t == 0) {
            last = obj;
        } else if (tol > 0.0 && t % check_every == 0) {
            double rel = last > 0.0 ? (last - obj) / last : 0.0;
            last = obj;
            if (rel < tol) stop = true;
        }
        if (stop) break;
        if (own) h = h * b / (hg + NMF_EPS);
        __syncthreads();
    }
    if (own) Hout[(long long)i * K + r] = h;
}
