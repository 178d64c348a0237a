// The defended pipeline on the GPU (mirrors src/diffusion/fast.rs): forward diffusion to t*,
// t* fused reverse steps of the MLP denoiser, the classifier MLP, and the backward passes
// for the input gradient. Rows are processed in tiles of MLP_ROWS; activations of a tile
// live in shared memory, and when the packed weights fit (`use_smem`) they are staged into
// shared memory once per block and the block walks over many row tiles (persistent grid).
//
// Packed weights: for each layer l: W_l (dims[l] × dims[l+1], row-major) then b_l. For the
// denoiser, b_0 is replaced by the per-step folded bias b1_j (time embedding folded in).
// Activation derivatives of hidden layers are stored per row at `deriv + row·hsum + off_l`
// when `deriv` is non-null (needed by the backward kernels).
//
// Noise: rows are (point i, draw e) at row i·draws + e. When `noise` is null the kernels draw
// element q of a row from Philox keyed by (key, ids[i], e) (see common.cuh); GPU noise
// streams therefore differ from the CPU's xoshiro streams. Parity tests pass the CPU noise
// explicitly (`noise` non-null, row stride `noise_stride`, step j at columns (j+1)·d…).

#define MLP_ROWS 4
#define MLP_MAX_LAYERS 16

struct MlpArgs {
    const float* w;        // packed weights (global or shared)
    const int* dims;       // nl + 1 widths (shared)
    int nl;
    const float* bias0;    // overrides b_0 when non-null
    int act;
};

__device__ __forceinline__ long long layer_offset(const int* dims, int l) {
    long long off = 0;
    for (int q = 0; q < l; ++q) off += (long long)dims[q] * dims[q + 1] + dims[q + 1];
    return off;
}

// Forward of one row tile. Input in `a` (row stride maxw); returns the buffer holding the
// output. Rows >= `valid` are computed but their derivatives are not stored.
__device__ float* mlp_forward_tile(const MlpArgs& m, float* a, float* b, int maxw,
                                   long long row0, int valid, float* deriv, int hsum) {
    int hoff = 0;
    for (int l = 0; l < m.nl; ++l) {
        const int in = m.dims[l], out = m.dims[l + 1];
        const float* W = m.w + layer_offset(m.dims, l);
        const float* bias = (l == 0 && m.bias0) ? m.bias0 : W + (long long)in * out;
        const bool hidden = l + 1 < m.nl;
        for (int o = threadIdx.x; o < out; o += blockDim.x) {
            float acc[MLP_ROWS];
            const float bo = bias[o];
#pragma unroll
            for (int r = 0; r < MLP_ROWS; ++r) acc[r] = bo;
            for (int i = 0; i < in; ++i) {
                const float w = W[(long long)i * out + o];
#pragma unroll
                for (int r = 0; r < MLP_ROWS; ++r) acc[r] = fmaf(a[r * maxw + i], w, acc[r]);
            }
#pragma unroll
            for (int r = 0; r < MLP_ROWS; ++r) {
                float v = acc[r];
                if (hidden) {
                    float dv;
                    v = act_apply(m.act, v, &dv);
                    if (deriv && r < valid) deriv[(row0 + r) * hsum + hoff + o] = dv;
                }
                b[r * maxw + o] = v;
            }
        }
        __syncthreads();
        if (hidden) hoff += out;
        float* t = a; a = b; b = t;
    }
    return a;
}

// Backward of one row tile: input-gradient of the MLP given the output gradient in `a`;
// multiplies by the stored derivative of every hidden layer. Warp per input unit, lanes
// over output units (coalesced weight reads), shuffle reduction.
__device__ float* mlp_backward_tile(const MlpArgs& m, float* a, float* b, int maxw,
                                    long long row0, int valid, const float* deriv, int hsum) {
    int hoff = 0;
    for (int l = 0; l + 1 < m.nl; ++l) hoff += m.dims[l + 1];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int l = m.nl - 1; l >= 0; --l) {
        const int in = m.dims[l], out = m.dims[l + 1];
        const float* W = m.w + layer_offset(m.dims, l);
        if (l > 0) hoff -= in;
        for (int i = warp; i < in; i += nwarps) {
            float acc[MLP_ROWS];
#pragma unroll
            for (int r = 0; r < MLP_ROWS; ++r) acc[r] = 0.0f;
            for (int o = lane; o < out; o += 32) {
                const float w = W[(long long)i * out + o];
#pragma unroll
                for (int r = 0; r < MLP_ROWS; ++r) acc[r] = fmaf(a[r * maxw + o], w, acc[r]);
            }
#pragma unroll
            for (int r = 0; r < MLP_ROWS; ++r)
                for (int s = 16; s > 0; s >>= 1) acc[r] += __shfl_down_sync(0xffffffffu, acc[r], s);
            if (lane == 0) {
#pragma unroll
                for (int r = 0; r < MLP_ROWS; ++r) {
                    float v = acc[r];
                    if (l > 0) v = r < valid ? v * deriv[(row0 + r) * hsum + hoff + i] : 0.0f;
                    b[r * maxw + i] = v;
                }
            }
        }
        __syncthreads();
        float* t = a; a = b; b = t;
    }
    return a;
}

// Shared-memory layout and weight staging common to every kernel below.
__device__ __forceinline__ void mlp_setup(MlpArgs& m, int* sdims, const int* dims, int nl,
                                          const float* w, long long wlen, int use_smem,
                                          float* smem, float** bufa, float** bufb, int maxw) {
    for (int t = threadIdx.x; t <= nl; t += blockDim.x) sdims[t] = dims[t];
    float* act = smem;
    if (use_smem) {
        for (long long t = threadIdx.x; t < wlen; t += blockDim.x) smem[t] = w[t];
        act = smem + wlen;
        m.w = smem;
    } else {
        m.w = w;
    }
    __syncthreads();
    m.dims = sdims;
    m.nl = nl;
    *bufa = act;
    *bufb = act + MLP_ROWS * maxw;
}

__device__ __forceinline__ float noise_at(const float* noise, long long noise_stride,
                                          unsigned long long key, const unsigned long long* ids,
                                          int draws, long long row, int col) {
    if (noise) return noise[row * noise_stride + col];
    return philox_normal(key, ids[row / draws], (unsigned int)(row % draws), (unsigned int)col);
}

// x = √ᾱ_{t*}·x0 + √(1−ᾱ_{t*})·z₀ (forward diffusion to t*).
extern "C" __global__ void denoise_start_f32(const float* __restrict__ x0, float* __restrict__ x,
                                             long long rows, int d, float sqrt_ab,
                                             float sqrt_1mab, const float* __restrict__ noise,
                                             long long noise_stride, unsigned long long key,
                                             const unsigned long long* __restrict__ ids,
                                             int draws) {
    GRID_STRIDE(e, rows * d) {
        long long row = e / d;
        int c = (int)(e % d);
        x[e] = sqrt_ab * x0[e] + sqrt_1mab * noise_at(noise, noise_stride, key, ids, draws, row, c);
    }
}

// One reverse step j for every row: x ← a·x + b·D_j(x) + σ·z_j, D_j the denoiser MLP with
// first-layer bias b1_j. Dynamic shared memory: [weights if use_smem] + 2·MLP_ROWS·maxw.
extern "C" __global__ void denoise_step_fwd_f32(
    float* __restrict__ x, long long rows, const float* __restrict__ w, long long wlen,
    const int* __restrict__ dims, int nl, int maxw, int use_smem, const float* __restrict__ b1,
    int act, float ca, float cb, float sigma, int step, const float* __restrict__ noise,
    long long noise_stride, unsigned long long key, const unsigned long long* __restrict__ ids,
    int draws, float* __restrict__ deriv, int hsum) {
    extern __shared__ float smem[];
    __shared__ int sdims[MLP_MAX_LAYERS + 1];
    MlpArgs m;
    float *bufa, *bufb;
    mlp_setup(m, sdims, dims, nl, w, wlen, use_smem, smem, &bufa, &bufb, maxw);
    m.bias0 = b1;
    m.act = act;
    const int d = sdims[0];
    const long long tiles = (rows + MLP_ROWS - 1) / MLP_ROWS;
    for (long long tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const long long row0 = tile * MLP_ROWS;
        const int valid = (int)min((long long)MLP_ROWS, rows - row0);
        for (int t = threadIdx.x; t < MLP_ROWS * d; t += blockDim.x) {
            int r = t / d, c = t % d;
            bufa[r * maxw + c] = r < valid ? x[(row0 + r) * d + c] : 0.0f;
        }
        __syncthreads();
        float* out = mlp_forward_tile(m, bufa, bufb, maxw, row0, valid, deriv, hsum);
        for (int t = threadIdx.x; t < valid * d; t += blockDim.x) {
            int r = t / d, c = t % d;
            long long row = row0 + r;
            float v = ca * x[row * d + c] + cb * out[r * maxw + c];
            if (sigma > 0.0f)
                v += sigma * noise_at(noise, noise_stride, key, ids, draws, row, (step + 1) * d + c);
            x[row * d + c] = v;
        }
        __syncthreads();
    }
}

// Classifier forward: logits = MLP(x) for every row (derivatives stored when deriv != 0).
extern "C" __global__ void mlp_fwd_f32(const float* __restrict__ x, float* __restrict__ y,
                                       long long rows, const float* __restrict__ w,
                                       long long wlen, const int* __restrict__ dims, int nl,
                                       int maxw, int use_smem, int act, float* __restrict__ deriv,
                                       int hsum) {
    extern __shared__ float smem[];
    __shared__ int sdims[MLP_MAX_LAYERS + 1];
    MlpArgs m;
    float *bufa, *bufb;
    mlp_setup(m, sdims, dims, nl, w, wlen, use_smem, smem, &bufa, &bufb, maxw);
    m.bias0 = nullptr;
    m.act = act;
    const int din = sdims[0], dout = sdims[nl];
    const long long tiles = (rows + MLP_ROWS - 1) / MLP_ROWS;
    for (long long tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const long long row0 = tile * MLP_ROWS;
        const int valid = (int)min((long long)MLP_ROWS, rows - row0);
        for (int t = threadIdx.x; t < MLP_ROWS * din; t += blockDim.x) {
            int r = t / din, c = t % din;
            bufa[r * maxw + c] = r < valid ? x[(row0 + r) * din + c] : 0.0f;
        }
        __syncthreads();
        float* out = mlp_forward_tile(m, bufa, bufb, maxw, row0, valid, deriv, hsum);
        for (int t = threadIdx.x; t < valid * dout; t += blockDim.x) {
            int r = t / dout, c = t % dout;
            y[(row0 + r) * dout + c] = out[r * maxw + c];
        }
        __syncthreads();
    }
}

// Input gradient through an MLP: gx = ∂/∂x given gy (uses the stored derivatives). With
// `ca`/`cb` this is also the reverse-step backward: g ← ca·g + MLPᵀ(cb·g) (in place when
// gx == gy; pass ca = 0, cb = 1 for a plain MLP backward).
extern "C" __global__ void mlp_bwd_f32(const float* gy, float* gx, long long rows,
                                       const float* __restrict__ w, long long wlen,
                                       const int* __restrict__ dims, int nl, int maxw,
                                       int use_smem, const float* __restrict__ deriv, int hsum,
                                       float ca, float cb) {
    extern __shared__ float smem[];
    __shared__ int sdims[MLP_MAX_LAYERS + 1];
    MlpArgs m;
    float *bufa, *bufb;
    mlp_setup(m, sdims, dims, nl, w, wlen, use_smem, smem, &bufa, &bufb, maxw);
    m.bias0 = nullptr;
    m.act = 0;
    const int din = sdims[0], dout = sdims[nl];
    const long long tiles = (rows + MLP_ROWS - 1) / MLP_ROWS;
    for (long long tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const long long row0 = tile * MLP_ROWS;
        const int valid = (int)min((long long)MLP_ROWS, rows - row0);
        for (int t = threadIdx.x; t < MLP_ROWS * dout; t += blockDim.x) {
            int r = t / dout, c = t % dout;
            bufa[r * maxw + c] = r < valid ? cb * gy[(row0 + r) * dout + c] : 0.0f;
        }
        __syncthreads();
        float* out = mlp_backward_tile(m, bufa, bufb, maxw, row0, valid, deriv, hsum);
        for (int t = threadIdx.x; t < valid * din; t += blockDim.x) {
            int r = t / din, c = t % din;
            long long e = (row0 + r) * din + c;
            float prev = ca != 0.0f ? ca * gy[e] : 0.0f;
            gx[e] = prev + out[r * maxw + c];
        }
        __syncthreads();
    }
}
