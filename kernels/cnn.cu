// CNN pieces (mirror src/nn/layers.rs, NHWC): im2col for 3×3 / pad 1 (the conv itself is a
// GEMM from gemm.cu), BatchNorm statistics + BN·ReLU (inference and training statistics),
// and 2×2/2 max pooling with the winning window position (first maximum on ties).

// cols[(b·h·w + y·w + x), (ky·3 + kx)·c + ci] = img[b, y+ky−1, x+kx−1, ci] (0 outside).
extern "C" __global__ void cnn_im2col3_f32(const float* __restrict__ img, float* __restrict__ cols,
                                           int n, int h, int w, int c) {
    const long long k = 9LL * c;
    GRID_STRIDE(e, (long long)n * h * w * k) {
        long long row = e / k;
        int col = (int)(e % k);
        int ci = col % c, kk = col / c, ky = kk / 3, kx = kk % 3;
        int x = (int)(row % w);
        long long t = row / w;
        int y = (int)(t % h);
        long long b = t / h;
        int iy = y + ky - 1, ix = x + kx - 1;
        float v = 0.0f;
        if (iy >= 0 && iy < h && ix >= 0 && ix < w) v = img[((b * h + iy) * w + ix) * c + ci];
        cols[e] = v;
    }
}

// Per-channel batch mean and biased variance of x (rows × c), one block per channel, f64
// accumulation (two passes over the column).
extern "C" __global__ void cnn_bn_stats_f32(const float* __restrict__ x, long long rows, int c,
                                            float* __restrict__ mean, float* __restrict__ var) {
    __shared__ double scratch[32];
    __shared__ double sh_mean;
    const int j = blockIdx.x;
    if (j >= c) return;
    double s = 0.0;
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) s += x[r * c + j];
    s = block_sum_f64(s, scratch);
    double nf = rows > 0 ? (double)rows : 1.0;
    if (threadIdx.x == 0) sh_mean = s / nf;
    __syncthreads();
    const double m = sh_mean;
    double q = 0.0;
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) {
        double dv = (double)x[r * c + j] - m;
        q += dv * dv;
    }
    q = block_sum_f64(q, scratch);
    if (threadIdx.x == 0) {
        mean[j] = (float)m;
        var[j] = (float)(q / nf);
    }
}

// xhat = (x − mean)·inv_std, out = max(γ·xhat + β, 0); inv_std = 1/√(var + bn_eps).
extern "C" __global__ void cnn_bn_relu_fwd_f32(const float* __restrict__ x,
                                               const float* __restrict__ mean,
                                               const float* __restrict__ var,
                                               const float* __restrict__ gamma,
                                               const float* __restrict__ beta, float bn_eps,
                                               long long rows, int c, float* __restrict__ xhat,
                                               float* __restrict__ out) {
    GRID_STRIDE(e, rows * c) {
        int j = (int)(e % c);
        float is = 1.0f / sqrtf(var[j] + bn_eps);
        float v = (x[e] - mean[j]) * is;
        if (xhat) xhat[e] = v;
        out[e] = fmaxf(gamma[j] * v + beta[j], 0.0f);
    }
}

// 2×2/2 max pooling (floor) on NHWC; arg = winning position q (0..3, row-major in the window).
extern "C" __global__ void cnn_maxpool2_fwd_f32(const float* __restrict__ x, float* __restrict__ out,
                                                unsigned char* __restrict__ arg, int n, int h,
                                                int w, int c) {
    const int oh = h / 2, ow = w / 2;
    GRID_STRIDE(e, (long long)n * oh * ow * c) {
        int ch = (int)(e % c);
        long long t = e / c;
        int ox = (int)(t % ow);
        t /= ow;
        int oy = (int)(t % oh);
        long long b = t / oh;
        float best = 0.0f;
        int bi = 0;
        for (int q = 0; q < 4; ++q) {
            int yy = 2 * oy + (q >> 1), xx = 2 * ox + (q & 1);
            float v = x[((b * h + yy) * w + xx) * c + ch];
            if (q == 0 || v > best) { best = v; bi = q; }
        }
        out[e] = best;
        if (arg) arg[e] = (unsigned char)bi;
    }
}
