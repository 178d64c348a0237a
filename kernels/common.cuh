// Shared helpers for every kernel module (prepended to each .cu source by the Rust side,
// so NVRTC needs no include path). f32 storage, f64 for long reductions.
#pragma once

#define GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (long long)(n); \
         i += (long long)blockDim.x * gridDim.x)

// Activation codes shared with the Rust side (`Act` in backend/cuda/denoiser.rs).
// +∞ without <math_constants.h> (NVRTC has no system headers).
#define F32_INF __int_as_float(0x7f800000)

#define ACT_RELU 0
#define ACT_SILU 1

__device__ __forceinline__ float act_apply(int act, float z, float* deriv) {
    if (act == ACT_RELU) {
        *deriv = z > 0.0f ? 1.0f : 0.0f;
        return fmaxf(z, 0.0f);
    }
    float sg = 1.0f / (1.0f + expf(-z));
    *deriv = sg * (1.0f + z * (1.0f - sg));
    return z * sg;
}

// Sum of a double over the block (blockDim.x a multiple of 32, <= 1024); result valid in
// thread 0. `scratch` holds >= 32 doubles of shared memory.
__device__ __forceinline__ double block_sum_f64(double v, double* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    v = (threadIdx.x < nw) ? scratch[threadIdx.x] : 0.0;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

// Philox4x32-10 (Salmon et al. 2011): counter-based, so any element of a noise stream can be
// generated independently. Streams are keyed by a 64-bit key and a 128-bit counter.
struct u32x4 { unsigned int x, y, z, w; };

__device__ __forceinline__ u32x4 philox4x32_10(u32x4 c, unsigned int k0, unsigned int k1) {
    const unsigned int M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        unsigned int hi0 = __umulhi(M0, c.x), lo0 = M0 * c.x;
        unsigned int hi1 = __umulhi(M1, c.z), lo1 = M1 * c.z;
        c = u32x4{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
        k0 += W0;
        k1 += W1;
    }
    return c;
}

// Uniform in (0, 1] from 32 random bits.
__device__ __forceinline__ float u01_open0(unsigned int b) {
    return ((float)(b >> 8) + 1.0f) * (1.0f / 16777216.0f);
}

// Standard normal number `e` of the stream (key, id, draw): Box–Muller on Philox output,
// counter = (e / 4, draw, id lo, id hi). A different stream from the CPU's keyed xoshiro
// streams, which the CUDA defence uploads by default (diffusion::cuda::NoiseSource).
__device__ __forceinline__ float philox_normal(unsigned long long key, unsigned long long id,
                                               unsigned int draw, unsigned int e) {
    u32x4 c = {e >> 2, draw, (unsigned int)id, (unsigned int)(id >> 32)};
    u32x4 r = philox4x32_10(c, (unsigned int)key, (unsigned int)(key >> 32));
    unsigned int q = e & 3u;
    float u1 = u01_open0(q < 2 ? r.x : r.z);
    float u2 = u01_open0(q < 2 ? r.y : r.w);
    float rad = sqrtf(-2.0f * logf(u1));
    float s, co;
    sincospif(2.0f * u2, &s, &co);
    return (q & 1u) ? rad * s : rad * co;
}
