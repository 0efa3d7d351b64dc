// CUDA kernels behind the fused training ops of `trainer::model::ops` (compiled to PTX by
// build.rs when the `cuda` feature is on). Each mirrors its CPU twin in `kernels.rs`: the same
// formulas, and the same hash-based dropout masks (element `i` of a tensor is kept iff
// keep_hash(i, key) >= threshold), so CPU and GPU runs drop the same elements.
// Activations may be f32 or bf16 (`_f32` / `_bf16` entry points); arithmetic is f32.
#include <cuda_bf16.h>
#include <stdint.h>

typedef unsigned long long u64;
typedef unsigned int u32;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

__device__ __forceinline__ u32 keep_hash(u32 i, u32 key) {
    u32 x = (i * 0x9e3779b9u) ^ key;
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

__device__ __forceinline__ float drop_factor(u64 i, u32 key, u32 threshold, float scale) {
    if (threshold == 0) return 1.0f;
    return keep_hash((u32)i, key) >= threshold ? scale : 0.0f;
}

__device__ __forceinline__ float gelu_f(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_grad_f(float v) {
    return 0.5f * (1.0f + erff(v * 0.70710678118654752f)) + v * 0.3989422804014327f * __expf(-0.5f * v * v);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#define GRID_STRIDE(i, n) for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (u64)blockDim.x * gridDim.x)

// ------------------------------------------------------------------ element-wise epilogues

// y = gelu(x + b[col])
template <typename T> __device__ void bias_gelu(const T* x, const T* b, T* y, u64 n, u64 k) {
    GRID_STRIDE(i, n) { y[i] = from_f<T>(gelu_f(to_f(x[i]) + to_f(b[i % k]))); }
}
// dx = dy * gelu'(x + b[col])
template <typename T> __device__ void bias_gelu_bwd(const T* x, const T* b, const T* dy, T* dx, u64 n, u64 k) {
    GRID_STRIDE(i, n) { dx[i] = from_f<T>(to_f(dy[i]) * gelu_grad_f(to_f(x[i]) + to_f(b[i % k]))); }
}
// y = (x + b[col]) * drop(i) + r
template <typename T>
__device__ void bias_drop_res(const T* x, const T* b, const T* r, T* y, u64 n, u64 k, u32 key, u32 threshold, float scale) {
    GRID_STRIDE(i, n) { y[i] = from_f<T>((to_f(x[i]) + to_f(b[i % k])) * drop_factor(i, key, threshold, scale) + to_f(r[i])); }
}
// y = x * drop(i)
template <typename T> __device__ void drop_mul(const T* x, T* y, u64 n, u32 key, u32 threshold, float scale) {
    GRID_STRIDE(i, n) { y[i] = from_f<T>(to_f(x[i]) * drop_factor(i, key, threshold, scale)); }
}

// ------------------------------------------------------------------ column sums (two passes, deterministic)

// partial[chunk, col] = sum of src[r, col] over the chunk's rows.
template <typename T> __device__ void colsum_partial(const T* src, float* partial, u64 rows, u64 k, u64 rows_per_chunk) {
    u64 col = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= k) return;
    u64 r0 = (u64)blockIdx.y * rows_per_chunk;
    u64 r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
    float s = 0.0f;
    for (u64 r = r0; r < r1; ++r) s += to_f(src[r * k + col]);
    partial[(u64)blockIdx.y * k + col] = s;
}
template <typename T> __device__ void colsum_finish(const float* partial, T* out, u64 chunks, u64 k) {
    u64 col = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= k) return;
    float s = 0.0f;
    for (u64 c = 0; c < chunks; ++c) s += partial[c * k + col];
    out[col] = from_f<T>(s);
}

// ------------------------------------------------------------------ masked softmax with dropout

// One warp per row of `scores` [rows, kk]; row r belongs to batch r / rows_per_batch, whose
// additive key mask is mask[batch, :]. out = softmax(scores * scale + mask) * drop(r*kk + j).
template <typename T>
__device__ void masked_softmax_drop(const T* s, const float* mask, T* out, u64 rows, u64 kk, u64 rows_per_batch, float scale,
                                    u32 key, u32 threshold, float dscale) {
    u64 row = (u64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const T* sr = s + row * kk;
    const float* m = mask + (row / rows_per_batch) * kk;
    T* o = out + row * kk;
    float mx = -INFINITY;
    for (u64 j = lane; j < kk; j += 32) mx = fmaxf(mx, to_f(sr[j]) * scale + m[j]);
    mx = warp_max(mx);
    float sum = 0.0f;
    for (u64 j = lane; j < kk; j += 32) sum += __expf(to_f(sr[j]) * scale + m[j] - mx);
    sum = warp_sum(sum);
    float inv = 1.0f / sum;
    for (u64 j = lane; j < kk; j += 32) {
        float p = __expf(to_f(sr[j]) * scale + m[j] - mx) * inv;
        o[j] = from_f<T>(p * drop_factor(row * kk + j, key, threshold, dscale));
    }
}
// Backward: recomputes y = softmax(...) from the scores; dyd = dy * drop;
// dx = scale * y * (dyd - sum(dyd * y)).
template <typename T>
__device__ void masked_softmax_drop_bwd(const T* s, const float* mask, const T* dy, T* dx, u64 rows, u64 kk, u64 rows_per_batch,
                                        float scale, u32 key, u32 threshold, float dscale) {
    u64 row = (u64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const T* sr = s + row * kk;
    const float* m = mask + (row / rows_per_batch) * kk;
    const T* g = dy + row * kk;
    T* o = dx + row * kk;
    float mx = -INFINITY;
    for (u64 j = lane; j < kk; j += 32) mx = fmaxf(mx, to_f(sr[j]) * scale + m[j]);
    mx = warp_max(mx);
    float sum = 0.0f;
    for (u64 j = lane; j < kk; j += 32) sum += __expf(to_f(sr[j]) * scale + m[j] - mx);
    sum = warp_sum(sum);
    float inv = 1.0f / sum;
    float dot = 0.0f;
    for (u64 j = lane; j < kk; j += 32) {
        float y = __expf(to_f(sr[j]) * scale + m[j] - mx) * inv;
        dot += to_f(g[j]) * drop_factor(row * kk + j, key, threshold, dscale) * y;
    }
    dot = warp_sum(dot);
    for (u64 j = lane; j < kk; j += 32) {
        float y = __expf(to_f(sr[j]) * scale + m[j] - mx) * inv;
        float gd = to_f(g[j]) * drop_factor(row * kk + j, key, threshold, dscale);
        o[j] = from_f<T>(scale * y * (gd - dot));
    }
}

// ------------------------------------------------------------------ layer norm (f32)

// One warp per row of x [rows, h].
extern "C" __global__ void sft_layer_norm_f32(const float* x, const float* g, const float* b, float* y, u64 rows, u64 h, float eps) {
    u64 row = (u64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float* xr = x + row * h;
    float* yr = y + row * h;
    float s = 0.0f;
    for (u64 i = lane; i < h; i += 32) s += xr[i];
    float mean = warp_sum(s) / (float)h;
    float v = 0.0f;
    for (u64 i = lane; i < h; i += 32) {
        float d = xr[i] - mean;
        v += d * d;
    }
    float rstd = rsqrtf(warp_sum(v) / (float)h + eps);
    for (u64 i = lane; i < h; i += 32) yr[i] = (xr[i] - mean) * rstd * g[i] + b[i];
}

// dx = rstd * (dy*g - mean(dy*g) - xhat * mean(dy*g*xhat)); also writes dyx = dy * xhat (for
// the gamma gradient's column sums).
extern "C" __global__ void sft_layer_norm_bwd_f32(const float* x, const float* g, const float* dy, float* dx, float* dyx, u64 rows, u64 h,
                                                  float eps) {
    u64 row = (u64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float* xr = x + row * h;
    const float* dyr = dy + row * h;
    float* dxr = dx + row * h;
    float* dyxr = dyx + row * h;
    float s = 0.0f;
    for (u64 i = lane; i < h; i += 32) s += xr[i];
    float mean = warp_sum(s) / (float)h;
    float v = 0.0f;
    for (u64 i = lane; i < h; i += 32) {
        float d = xr[i] - mean;
        v += d * d;
    }
    float rstd = rsqrtf(warp_sum(v) / (float)h + eps);
    float a = 0.0f, c = 0.0f;
    for (u64 i = lane; i < h; i += 32) {
        float xh = (xr[i] - mean) * rstd;
        float gd = dyr[i] * g[i];
        a += gd;
        c += gd * xh;
    }
    a = warp_sum(a) / (float)h;
    c = warp_sum(c) / (float)h;
    for (u64 i = lane; i < h; i += 32) {
        float xh = (xr[i] - mean) * rstd;
        dxr[i] = rstd * (dyr[i] * g[i] - a - xh * c);
        dyxr[i] = dyr[i] * xh;
    }
}

// ------------------------------------------------------------------ entry points

#define ELEMWISE_ENTRIES(SUF, T)                                                                                              \
    extern "C" __global__ void sft_bias_gelu_##SUF(const T* x, const T* b, T* y, u64 n, u64 k) { bias_gelu<T>(x, b, y, n, k); } \
    extern "C" __global__ void sft_bias_gelu_bwd_##SUF(const T* x, const T* b, const T* dy, T* dx, u64 n, u64 k) {            \
        bias_gelu_bwd<T>(x, b, dy, dx, n, k);                                                                                 \
    }                                                                                                                         \
    extern "C" __global__ void sft_bias_drop_res_##SUF(const T* x, const T* b, const T* r, T* y, u64 n, u64 k, u32 key,        \
                                                       u32 threshold, float scale) {                                          \
        bias_drop_res<T>(x, b, r, y, n, k, key, threshold, scale);                                                            \
    }                                                                                                                         \
    extern "C" __global__ void sft_drop_mul_##SUF(const T* x, T* y, u64 n, u32 key, u32 threshold, float scale) {              \
        drop_mul<T>(x, y, n, key, threshold, scale);                                                                          \
    }                                                                                                                         \
    extern "C" __global__ void sft_colsum_partial_##SUF(const T* src, float* partial, u64 rows, u64 k, u64 rows_per_chunk) {   \
        colsum_partial<T>(src, partial, rows, k, rows_per_chunk);                                                             \
    }                                                                                                                         \
    extern "C" __global__ void sft_colsum_finish_##SUF(const float* partial, T* out, u64 chunks, u64 k) {                      \
        colsum_finish<T>(partial, out, chunks, k);                                                                            \
    }                                                                                                                         \
    extern "C" __global__ void sft_masked_softmax_drop_##SUF(const T* s, const float* mask, T* out, u64 rows, u64 kk,           \
                                                             u64 rows_per_batch, float scale, u32 key, u32 threshold,         \
                                                             float dscale) {                                                  \
        masked_softmax_drop<T>(s, mask, out, rows, kk, rows_per_batch, scale, key, threshold, dscale);                        \
    }                                                                                                                         \
    extern "C" __global__ void sft_masked_softmax_drop_bwd_##SUF(const T* s, const float* mask, const T* dy, T* dx, u64 rows,   \
                                                                 u64 kk, u64 rows_per_batch, float scale, u32 key,            \
                                                                 u32 threshold, float dscale) {                               \
        masked_softmax_drop_bwd<T>(s, mask, dy, dx, rows, kk, rows_per_batch, scale, key, threshold, dscale);                 \
    }

ELEMWISE_ENTRIES(f32, float)
ELEMWISE_ENTRIES(bf16, __nv_bfloat16)

// ------------------------------------------------------------------ AdamW over many tensors

// One launch updates every parameter of a group: block row y is tensor y (its f32 values at
// params[y], its elements offsets[y]..offsets[y+1] of the flat, already clipped gradient g and
// moments m, v). The rule of torch's single-tensor AdamW, as `optim::tensor_update`:
// m = b1 m + (1-b1) g, v = b2 v + (1-b2) g², p = p decay - step_size m / (√v inv_sqrt_bc2 + eps)
// with decay = 1 - lr wd, step_size = lr / bc1, inv_sqrt_bc2 = 1 / √bc2.
extern "C" __global__ void sft_adamw_multi_f32(const u64* params, const u64* offsets, const float* g, float* m, float* v,
                                               float b1, float one_minus_b1, float b2, float one_minus_b2, float eps,
                                               float decay, float step_size, float inv_sqrt_bc2) {
    u32 t = blockIdx.y;
    u64 lo = offsets[t];
    u64 n = offsets[t + 1] - lo;
    float* p = (float*)params[t];
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)blockDim.x * gridDim.x) {
        u64 j = lo + i;
        float gi = g[j];
        float mi = b1 * m[j] + one_minus_b1 * gi;
        float vi = b2 * v[j] + one_minus_b2 * (gi * gi);
        m[j] = mi;
        v[j] = vi;
        float denom = sqrtf(vi) * inv_sqrt_bc2 + eps;
        p[i] = p[i] * decay - step_size * (mi / denom);
    }
}
