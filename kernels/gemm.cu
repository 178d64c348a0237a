// Tiled SGEMM for row-major matrices: C[z] = alpha·op(A)·op(B) + beta·C[z] over the k-range of
// split z (blockIdx.z). Hand-written so that GPU nodes need only the driver (no libcublas);
// the split-K form keeps tall-skinny products such as HᵀV (k × p, reduced over n rows)
// busy on every SM. 64×64 output tile per block, 16-deep k tiles, 4×4 outputs per thread.

#define TM 64
#define TN 64
#define TK 16

extern "C" __global__ void gemm_tiled_f32(int M, int N, int K, const float* __restrict__ A,
                                          int lda, int trans_a, const float* __restrict__ B,
                                          int ldb, int trans_b, float* __restrict__ C, int ldc,
                                          float alpha, float beta, int k_per_split,
                                          long long c_split_stride) {
    __shared__ float As[TK][TM + 4];
    __shared__ float Bs[TK][TN + 4];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int row0 = blockIdx.y * TM, col0 = blockIdx.x * TN;
    const int kbeg = blockIdx.z * k_per_split;
    const int kend = min(K, kbeg + k_per_split);
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    for (int k0 = kbeg; k0 < kend; k0 += TK) {
        for (int t = threadIdx.x; t < TK * TM; t += blockDim.x) {
            int kk = t / TM, mm = t % TM;
            int gm = row0 + mm, gk = k0 + kk;
            float v = 0.0f;
            if (gm < M && gk < kend)
                v = trans_a ? A[(long long)gk * lda + gm] : A[(long long)gm * lda + gk];
            As[kk][mm] = v;
        }
        for (int t = threadIdx.x; t < TK * TN; t += blockDim.x) {
            int kk = t / TN, nn = t % TN;
            int gn = col0 + nn, gk = k0 + kk;
            float v = 0.0f;
            if (gn < N && gk < kend)
                v = trans_b ? B[(long long)gn * ldb + gk] : B[(long long)gk * ldb + gn];
            Bs[kk][nn] = v;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TK; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
    float* Cz = C + blockIdx.z * c_split_stride;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        int gm = row0 + ty + 16 * i;
        if (gm >= M) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            int gn = col0 + tx + 16 * j;
            if (gn >= N) continue;
            float* c = Cz + (long long)gm * ldc + gn;
            *c = beta == 0.0f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *c;
        }
    }
}

// out[e] = Σ_z parts[z·len + e] (deterministic reduction of the split-K partials).
extern "C" __global__ void gemm_sum_splits_f32(const float* __restrict__ parts, int splits,
                                               long long len, float* __restrict__ out) {
    GRID_STRIDE(e, len) {
        float s = 0.0f;
        for (int z = 0; z < splits; ++z) s += parts[z * len + e];
        out[e] = s;
    }
}
