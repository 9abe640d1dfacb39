// DiTAC CUDA kernels: the table forward, the table backward (dX in the same pass, dθ reduced
// per warp, per block, then across blocks in a fixed order) and the final dθ reduction.
//
// Compiled by NVRTC at first use (src/cuda/glue.rs), with --fmad=false and IEEE division, so
// that the float arithmetic follows the CPU core's op order (src/core/kernels/scalar.rs,
// src/core/activation.rs, src/core/erf.rs) operation by operation. No headers are included:
// float16 and bfloat16 conversions are written here (PTX for float16, bit arithmetic for
// bfloat16), so NVRTC needs no include path.
//
// The argument structs are mirrored, field by field, by the #[repr(C)] structs of
// src/cuda/mod.rs (FwdArgs, GradArgs, ReduceArgs); a test there pins their sizes and offsets.
// Every kernel takes its struct by value as its only parameter.

// Dynamic shared memory; the CPU emulation (tests/cuda_host/cuda_emu.h) defines its own.
#ifndef DITAC_DYNAMIC_SHARED
#define DITAC_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;

struct FwdArgs {
    const void* x;       // input, element type T
    void* y;             // output, element type T
    const float* xt;     // channels rows of `nodes` values: x̃ at the nodes, original units
    u64 len;             // elements
    u64 head;            // scalar elements before the first 16-byte aligned vector
    u64 nvec;            // 16-byte vectors after the head; the rest (< VEC elements) is the tail
    u64 inner;           // elements per channel run (element e is in channel (e / inner) % channels)
    u32 channels;        // C (1: one table for the whole tensor)
    u32 nodes;           // n ≥ 2
    float lo, hi, add_in, mul_in, scale, alpha;
    u32 variant;         // 0 ditac, 1 ge, 2 leaky
    u32 linear;          // 0 nearest, 1 linear
    u32 smem;            // 1: the tables are copied into dynamic shared memory first
    u32 pad;
};

struct GradArgs {
    const void* dy;      // T
    const void* x;       // T
    void* dx;            // T
    const float* xt;     // [C][n]    x̃ at the nodes (original units)
    const float* dt;     // [C][n]    dT̂/du at the nodes (nearest only)
    const float* g;      // [C][n][d] dT̂/dθ at the nodes
    double* acc;         // per-warp accumulators in global memory when acc_smem == 0: [grid][warps][C·d]
    double* partials;    // per-block sums: [grid][C·d]
    u64 len, head, nvec, inner;
    u32 channels, nodes, d;
    u32 smem;            // bit 0: tables in shared memory; bit 1: accumulators in shared memory
    float lo, hi, add_in, mul_in, mul_out, scale, alpha;
    u32 variant, linear, pad;
};

struct ReduceArgs {
    const double* partials;  // [slots][width]
    float* out;              // [width]
    u32 slots;
    u32 width;
};

// ------------------------------------------------------------------------------------------
// Element types

#ifndef DITAC_HOST_EMU
__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#else
// The CPU emulation (tests/cuda_host): the same IEEE conversions without PTX.
__device__ __forceinline__ float h2f(u16 h) { __half v; v.x = h; return __half2float(v); }
__device__ __forceinline__ u16 f2h(float f) { return __float2half_rn(f).x; }
#endif
__device__ __forceinline__ float b2f(u16 b) { return __uint_as_float(((u32)b) << 16); }
// Round to nearest even; NaN stays a (quiet) NaN — as the `half` crate's bf16::from_f32.
__device__ __forceinline__ u16 f2b(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

struct F32 {};
struct F16 {};
struct BF16 {};

template <typename T> struct Io;

template <> struct Io<F32> {
    enum { VEC = 4 };
    static __device__ __forceinline__ float get(const void* p, u64 i) { return __ldg((const float*)p + i); }
    static __device__ __forceinline__ void put(void* p, u64 i, float v) { ((float*)p)[i] = v; }
    static __device__ __forceinline__ void unpack(uint4 v, float* f) {
        f[0] = __uint_as_float(v.x); f[1] = __uint_as_float(v.y);
        f[2] = __uint_as_float(v.z); f[3] = __uint_as_float(v.w);
    }
    static __device__ __forceinline__ uint4 pack(const float* f) {
        return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3]));
    }
};

template <typename Conv> struct Io16 {
    enum { VEC = 8 };
    static __device__ __forceinline__ float get(const void* p, u64 i) { return Conv::to(__ldg((const u16*)p + i)); }
    static __device__ __forceinline__ void put(void* p, u64 i, float v) { ((u16*)p)[i] = Conv::from(v); }
    static __device__ __forceinline__ void unpack(uint4 v, float* f) {
        u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            f[2 * k] = Conv::to((u16)(w[k] & 0xffffu));
            f[2 * k + 1] = Conv::to((u16)(w[k] >> 16));
        }
    }
    static __device__ __forceinline__ uint4 pack(const float* f) {
        u32 w[4];
#pragma unroll
        for (int k = 0; k < 4; k++) w[k] = (u32)Conv::from(f[2 * k]) | ((u32)Conv::from(f[2 * k + 1]) << 16);
        return make_uint4(w[0], w[1], w[2], w[3]);
    }
};
struct ConvH { static __device__ __forceinline__ float to(u16 v) { return h2f(v); } static __device__ __forceinline__ u16 from(float v) { return f2h(v); } };
struct ConvB { static __device__ __forceinline__ float to(u16 v) { return b2f(v); } static __device__ __forceinline__ u16 from(float v) { return f2b(v); } };
template <> struct Io<F16> : Io16<ConvH> {};
template <> struct Io<BF16> : Io16<ConvB> {};

// ------------------------------------------------------------------------------------------
// The math, in the CPU core's op order

// src/core/erf.rs: NaN passes the clamps (comparisons with NaN are false). The Horner steps are
// fused multiply-adds as on the CPU (explicit fmaf: the module is compiled with --fmad=false).
__device__ __forceinline__ float erf_f32(float x0) {
    float x = x0 < -4.0f ? -4.0f : (x0 > 4.0f ? 4.0f : x0);
    float x2 = x * x;
    float p = fmaf(x2, -2.7261423e-10f, 2.7706814e-8f);
    p = fmaf(x2, p, -2.101024e-6f);
    p = fmaf(x2, p, -5.6925064e-5f);
    p = fmaf(x2, p, -7.3499063e-4f);
    p = fmaf(x2, p, -2.9546e-3f);
    p = fmaf(x2, p, -1.6096033e-2f);
    p = x * p;
    float q = fmaf(x2, -1.4566072e-5f, -2.1337406e-4f);
    q = fmaf(x2, q, -1.682827e-3f);
    q = fmaf(x2, q, -7.3733292e-3f);
    q = fmaf(x2, q, -1.426474e-2f);
    float r = p / q;
    r = r < -1.0f ? -1.0f : (r > 1.0f ? 1.0f : r);
    return fabsf(x) >= 3.92f ? copysignf(1.0f, x) : r;
}

#define DITAC_FRAC_1_SQRT_2 0.70710677f
#define DITAC_FRAC_1_SQRT_2PI 0.39894229f

__device__ __forceinline__ float phi(float x) { return 0.5f * (1.0f + erf_f32(x * DITAC_FRAC_1_SQRT_2)); }
__device__ __forceinline__ float pdf(float x) { return DITAC_FRAC_1_SQRT_2PI * expf(-(x * x) * 0.5f); }

__device__ __forceinline__ bool in_range(float x, float lo, float hi) { return (x >= lo) & (x <= hi); }

// The table forward of one element (src/core/kernels/scalar.rs `body`). `tab` is the row of x̃.
__device__ __forceinline__ float fwd_one(const FwdArgs& a, const float* tab, float xi) {
    const bool inr = in_range(xi, a.lo, a.hi);
    const float u = (xi + a.add_in) * a.mul_in;
    const int nl = (int)a.nodes - 1;
    float w;
    if (a.linear) {
        const float p = inr ? u * a.scale : 0.0f;
        int i = (int)floorf(p);
        i = max(0, min(i, nl - 1));
        const float f = p - (float)i;
        const float x0 = tab[i], x1 = tab[i + 1];
        w = x0 + f * (x1 - x0);
    } else {
        const float p = inr ? rintf(u * a.scale) : 0.0f;
        int i = (int)p;
        i = max(0, min(i, nl));
        w = tab[i];
    }
    if (!inr) w = xi;
    if (a.variant == 0) return w * phi(xi);
    if (a.variant == 1) return w * phi(w);
    return w >= 0.0f ? w : a.alpha * w;
}

// The channel of element e. 32-bit division when e fits (a 64-bit `/` and `%` are dozens of
// instructions on the device).
__device__ __forceinline__ u32 channel_of(u64 e, u64 inner, u32 channels) {
    if (channels == 1) return 0u;
    if ((e >> 32) == 0 && (inner >> 32) == 0) return ((u32)e / (u32)inner) % channels;
    return (u32)((e / inner) % channels);
}

// The channels of consecutive elements: one division for the first, then a step per element.
struct Channels {
    u32 ch;
    u64 r;  // position of the element within its channel run, < inner
    __device__ __forceinline__ Channels(u64 e, u64 inner, u32 channels) {
        ch = channel_of(e, inner, channels);
        r = channels == 1 ? 0 : ((e >> 32) == 0 && (inner >> 32) == 0 ? (u64)((u32)e % (u32)inner) : e % inner);
    }
    __device__ __forceinline__ void next(u64 inner, u32 channels) {
        if (++r == inner) {
            r = 0;
            ch = ch + 1 == channels ? 0 : ch + 1;
        }
    }
};

// ------------------------------------------------------------------------------------------
// Forward: one pass, 16-byte vectors (UNROLL in flight per thread), table in shared memory.

#define FWD_UNROLL 4

template <typename T> __device__ __forceinline__ void fwd_kernel(const FwdArgs& a) {
    DITAC_DYNAMIC_SHARED(dyn_smem);
    typedef Io<T> IO;
    const int VEC = IO::VEC;
    const float* tab = a.xt;
    if (a.smem) {
        float* s = (float*)dyn_smem;
        const u32 total = a.channels * a.nodes;
        for (u32 i = threadIdx.x; i < total; i += blockDim.x) s[i] = __ldg(a.xt + i);
        __syncthreads();
        tab = s;
    }
    const u64 tid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 nth = (u64)gridDim.x * blockDim.x;
    // Scalar head and tail.
    const u64 tail0 = a.head + a.nvec * VEC;
    const u64 nscalar = a.head + (a.len - tail0);
    for (u64 s = tid; s < nscalar; s += nth) {
        const u64 e = s < a.head ? s : tail0 + (s - a.head);
        const float* row = tab + (u64)channel_of(e, a.inner, a.channels) * a.nodes;
        IO::put(a.y, e, fwd_one(a, row, IO::get(a.x, e)));
    }
    const uint4* xv = (const uint4*)((const char*)a.x + a.head * (16 / VEC));
    uint4* yv = (uint4*)((char*)a.y + a.head * (16 / VEC));
    for (u64 v = tid; v < a.nvec; v += nth * FWD_UNROLL) {
        uint4 buf[FWD_UNROLL];
#pragma unroll
        for (int k = 0; k < FWD_UNROLL; k++) {
            const u64 idx = v + (u64)k * nth;
            if (idx < a.nvec) buf[k] = __ldg(xv + idx);
        }
#pragma unroll
        for (int k = 0; k < FWD_UNROLL; k++) {
            const u64 idx = v + (u64)k * nth;
            if (idx < a.nvec) {
                float f[VEC];
                IO::unpack(buf[k], f);
                const u64 e0 = a.head + idx * VEC;
                Channels cs(e0, a.inner, a.channels);
#pragma unroll
                for (int j = 0; j < VEC; j++) {
                    const float* row = tab + (u64)cs.ch * a.nodes;
                    f[j] = fwd_one(a, row, f[j]);
                    cs.next(a.inner, a.channels);
                }
                yv[idx] = IO::pack(f);
            }
        }
    }
}

extern "C" __global__ void ditac_fwd_f32(const FwdArgs a) { fwd_kernel<F32>(a); }
extern "C" __global__ void ditac_fwd_f16(const FwdArgs a) { fwd_kernel<F16>(a); }
extern "C" __global__ void ditac_fwd_bf16(const FwdArgs a) { fwd_kernel<BF16>(a); }

// ------------------------------------------------------------------------------------------
// Backward

#define FULL_MASK 0xffffffffu
#define GRAD_DREG 16

// Lane 0 gets the sum of v over the warp, in a fixed order (the xor butterfly).
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// What one element contributes to dθ: channel, s = dY·∂y/∂x̃·(b−a) and where its row of
// dT̂/dθ is (node i, and for "linear" the weight f of node i+1).
struct Contrib {
    bool has;
    u32 ch;
    float s;
    int i;
    float f;
};

__device__ __forceinline__ Contrib no_contrib() {
    Contrib c;
    c.has = false;
    c.ch = 0;
    c.s = 0.0f;
    c.i = 0;
    c.f = 0.0f;
    return c;
}

// Row element k of dT̂/dθ for the contribution, in the CPU's op order (r0 + f·(r1 − r0)).
__device__ __forceinline__ float grow(const GradArgs& a, const float* g, const Contrib& c, u32 k) {
    const float* r0 = g + ((u64)c.ch * a.nodes + (u64)c.i) * a.d;
    if (!a.linear) return r0[k];
    const float* r1 = r0 + a.d;
    return r0[k] + c.f * (r1[k] - r0[k]);
}

// One element of the backward (src/core/activation.rs `backward`): returns dX, fills `c`.
__device__ __forceinline__ float grad_one(const GradArgs& a, const float* xt, const float* dt, float gi, float xi,
                                          u32 ch, Contrib& c) {
    const bool inr = in_range(xi, a.lo, a.hi);
    float w = xi, dw = 1.0f;
    int i = 0;
    float f = 0.0f;
    if (inr) {
        const float u = (xi + a.add_in) * a.mul_in;
        const int nl = (int)a.nodes - 1;
        const float* row = xt + (u64)ch * a.nodes;
        if (a.linear) {
            const float p = u * a.scale;
            i = (int)floorf(p);
            i = max(0, min(i, nl - 1));
            f = p - (float)i;
            const float x0 = row[i], x1 = row[i + 1];
            w = x0 + f * (x1 - x0);
            dw = (x1 - x0) * a.scale * a.mul_in;
        } else {
            i = (int)rintf(u * a.scale);
            i = max(0, min(i, nl));
            w = row[i];
            dw = dt[(u64)ch * a.nodes + i];
        }
    }
    float g, direct;
    if (a.variant == 0) {
        const float p = phi(xi);
        g = p;
        direct = w * pdf(xi);
    } else if (a.variant == 1) {
        const float p = phi(w);
        g = p + w * pdf(w);
        direct = 0.0f;
    } else {
        g = w >= 0.0f ? 1.0f : a.alpha;
        direct = 0.0f;
    }
    c.has = inr && a.d > 0;
    c.ch = ch;
    c.s = gi * g * a.mul_out;
    c.i = i;
    c.f = f;
    return gi * (g * dw + direct);
}

struct WarpAcc {
    double reg[GRAD_DREG];
    int cur;  // the channel `reg` accumulates (warp-uniform), -1: none
};

// Adds the warp's register sums into acc[cur] (lane 0) and clears them.
__device__ __forceinline__ void flush(const GradArgs& a, WarpAcc& w, double* acc, u32 lane) {
    if (w.cur >= 0) {
#pragma unroll
        for (u32 k = 0; k < GRAD_DREG; k++) {
            if (k < a.d) {
                const double v = warp_sum(w.reg[k]);
                if (lane == 0) acc[(u64)w.cur * a.d + k] += v;
            }
            w.reg[k] = 0.0;
        }
    }
    w.cur = -1;
}

// The lane of the q-th set bit of m, counting from 0 (m has more than q set bits): a binary
// search over halves, quarters, … of the mask.
__device__ __forceinline__ u32 nth_lane(u32 m, u32 q) {
    u32 lane = 0;
#pragma unroll
    for (u32 w = 16; w > 0; w >>= 1) {
        const u32 low = (u32)__popc(m & ((1u << w) - 1u));
        if (q >= low) {
            q -= low;
            m >>= w;
            lane += w;
        }
    }
    return lane;
}

// A channel no lane has (channels ≤ 2^32 − 1, so ch ≤ 2^32 − 2): the match key of lanes
// without a contribution.
#define NO_CHANNEL 0xffffffffu

// Accumulates one contribution per lane. Every lane of the warp calls it (collectives).
//
// Fast path: every contributing lane is in the warp's current channel (long channel runs):
// per-lane register sums, one warp sum per dθ row when the channel changes (flush).
//
// Otherwise (lanes in several channels — channel-last layouts — or d > GRAD_DREG), a segmented
// sum: the contributing lanes of one channel (a __match_any_sync group) add their terms in a
// fixed tree over their ranks in lane order — at level s (o = 2^s), rank r, a multiple of 2o,
// adds rank r + o's partial sum — and the group's lowest lane (rank 0) adds the total to
// acc[ch·d + k]. Every group's tree runs in the same shuffles, so a dθ row costs as many double
// shuffles as the largest group has levels (⌈log2 size⌉ ≤ 5; none when every lane is in its own
// channel), instead of a 5-shuffle warp sum per channel present (up to 32 channels a warp). The
// order depends only on which lanes contribute to which channel: dθ stays bitwise
// deterministic, with no atomics. Different lanes now update the warp's accumulators, so the
// path starts and ends with __syncwarp (memory ordering between them and lane 0's flushes).
__device__ __forceinline__ void accumulate(const GradArgs& a, const float* g, WarpAcc& w, double* acc,
                                           const Contrib& c, u32 lane) {
    if (a.d <= GRAD_DREG) {
        bool ok = !c.has || (int)c.ch == w.cur;
        if (!__all_sync(FULL_MASK, ok)) {
            flush(a, w, acc, lane);
            const unsigned act = __ballot_sync(FULL_MASK, c.has);
            const int leader = __ffs(act) - 1;  // act ≠ 0: some lane was not ok
            w.cur = __shfl_sync(FULL_MASK, (int)c.ch, leader);
            ok = !c.has || (int)c.ch == w.cur;
        }
        if (__all_sync(FULL_MASK, ok)) {
            if (c.has) {
#pragma unroll
                for (u32 k = 0; k < GRAD_DREG; k++)
                    if (k < a.d) w.reg[k] += (double)c.s * (double)grow(a, g, c, k);
            }
            return;
        }
    }
    if (!__any_sync(FULL_MASK, c.has)) return;
    __syncwarp(FULL_MASK);
    const u32 grp = __match_any_sync(FULL_MASK, c.has ? c.ch : NO_CHANNEL);
    const u32 rank = (u32)__popc(grp & ((1u << lane) - 1u)), size = (u32)__popc(grp);
    // The tree's depth: the levels of the largest group (warp-uniform).
    u32 depth = 0;
    while (depth < 5 && __any_sync(FULL_MASK, c.has && size > (1u << depth))) depth++;
    // The tree in one register (the backward is short of registers): 5 bits per level, the
    // lane to add at that level; a lane that adds nothing there names itself.
    u32 plan = 0;
#pragma unroll
    for (u32 s = 0; s < 5; s++) {
        const u32 o = 1u << s;
        const bool r = s < depth && c.has && (rank & (2 * o - 1)) == 0 && rank + o < size;
        plan |= (r ? nth_lane(grp, rank + o) : lane) << (5 * s);
    }
    const bool leader = c.has && rank == 0;
    for (u32 k = 0; k < a.d; k++) {
        double v = c.has ? (double)c.s * (double)grow(a, g, c, k) : 0.0;
#pragma unroll
        for (u32 s = 0; s < 5; s++) {
            if (s < depth) {
                const u32 src = (plan >> (5 * s)) & 31u;
                const double p = __shfl_sync(FULL_MASK, v, (int)src);
                if (src != lane) v += p;
            }
        }
        if (leader) acc[(u64)c.ch * a.d + k] += v;
    }
    __syncwarp(FULL_MASK);
}

template <typename T> __device__ __forceinline__ void grad_kernel(const GradArgs& a) {
    DITAC_DYNAMIC_SHARED(dyn_smem);
    typedef Io<T> IO;
    const int VEC = IO::VEC;
    const u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const u32 width = a.channels * a.d;
    const u64 cn = (u64)a.channels * a.nodes;
    const float* xt = a.xt;
    const float* dt = a.dt;
    const float* g = a.g;
    u64 tab_bytes = 0;
    if (a.smem & 1u) {
        float* s = (float*)dyn_smem;
        const u64 nd = cn * a.d;
        for (u64 i = threadIdx.x; i < cn; i += blockDim.x) s[i] = __ldg(a.xt + i);
        if (!a.linear)
            for (u64 i = threadIdx.x; i < cn; i += blockDim.x) s[cn + i] = __ldg(a.dt + i);
        for (u64 i = threadIdx.x; i < nd; i += blockDim.x) s[2 * cn + i] = __ldg(a.g + i);
        xt = s;
        dt = s + cn;
        g = s + 2 * cn;
        tab_bytes = ((2 * cn + nd) * 4 + 15) / 16 * 16;
    }
    double* acc = (a.smem & 2u) ? (double*)(dyn_smem + tab_bytes) + (u64)warp * width
                                : a.acc + ((u64)blockIdx.x * warps + warp) * width;
    for (u32 i = lane; i < width; i += 32) acc[i] = 0.0;
    __syncthreads();
    WarpAcc wa;
#pragma unroll
    for (int k = 0; k < GRAD_DREG; k++) wa.reg[k] = 0.0;
    wa.cur = -1;

    // Warp-uniform loops: lane l of a warp takes item base + l.
    const u64 wfirst = (u64)blockIdx.x * blockDim.x + (u64)warp * 32;
    const u64 nth = (u64)gridDim.x * blockDim.x;
    const u64 tail0 = a.head + a.nvec * VEC;
    const u64 nscalar = a.head + (a.len - tail0);
    for (u64 base = wfirst; base < nscalar; base += nth) {
        const u64 s = base + lane;
        Contrib c = no_contrib();
        if (s < nscalar) {
            const u64 e = s < a.head ? s : tail0 + (s - a.head);
            const u32 ch = channel_of(e, a.inner, a.channels);
            IO::put(a.dx, e, grad_one(a, xt, dt, IO::get(a.dy, e), IO::get(a.x, e), ch, c));
        }
        accumulate(a, g, wa, acc, c, lane);
    }
    const uint4* gv = (const uint4*)((const char*)a.dy + a.head * (16 / VEC));
    const uint4* xv = (const uint4*)((const char*)a.x + a.head * (16 / VEC));
    uint4* ov = (uint4*)((char*)a.dx + a.head * (16 / VEC));
    // Software pipelining: the next iteration's dY and X vectors are loaded before this one's
    // are processed (the backward holds many registers, so few threads are resident per SM).
    uint4 gq = make_uint4(0u, 0u, 0u, 0u), xq = gq;
    if (wfirst + lane < a.nvec) {
        gq = __ldg(gv + wfirst + lane);
        xq = __ldg(xv + wfirst + lane);
    }
    for (u64 base = wfirst; base < a.nvec; base += nth) {
        const u64 idx = base + lane;
        const bool valid = idx < a.nvec;
        uint4 gn = gq, xn = xq;
        if (idx + nth < a.nvec) {
            gn = __ldg(gv + idx + nth);
            xn = __ldg(xv + idx + nth);
        }
        float gf[VEC], xf[VEC], of[VEC];
        IO::unpack(gq, gf);
        IO::unpack(xq, xf);
        const u64 e0 = a.head + idx * VEC;
        Channels cs(valid ? e0 : 0, a.inner, a.channels);
#pragma unroll
        for (int j = 0; j < VEC; j++) {
            Contrib c = no_contrib();
            if (valid) of[j] = grad_one(a, xt, dt, gf[j], xf[j], cs.ch, c);
            cs.next(a.inner, a.channels);
            accumulate(a, g, wa, acc, c, lane);
        }
        if (valid) ov[idx] = IO::pack(of);
        gq = gn;
        xq = xn;
    }
    flush(a, wa, acc, lane);
    __syncthreads();
    // Per-block sums over the warps, in warp order.
    double* wacc = (a.smem & 2u) ? (double*)(dyn_smem + tab_bytes) : a.acc + (u64)blockIdx.x * warps * width;
    for (u32 i = threadIdx.x; i < width; i += blockDim.x) {
        double t = 0.0;
        for (u32 w = 0; w < warps; w++) t += wacc[(u64)w * width + i];
        a.partials[(u64)blockIdx.x * width + i] = t;
    }
}

extern "C" __global__ void ditac_grad_f32(const GradArgs a) { grad_kernel<F32>(a); }
extern "C" __global__ void ditac_grad_f16(const GradArgs a) { grad_kernel<F16>(a); }
extern "C" __global__ void ditac_grad_bf16(const GradArgs a) { grad_kernel<BF16>(a); }

// dθ[i] = Σ over slots of partials[slot][i], one block per i: thread t sums slots t, t+blockDim,
// … in order, then a fixed tree in shared memory. Deterministic for a given launch plan.
extern "C" __global__ void ditac_grad_reduce(const ReduceArgs a) {
    __shared__ double part[256];
    const u32 i = blockIdx.x;
    double t = 0.0;
    for (u32 s = threadIdx.x; s < a.slots; s += blockDim.x) t += a.partials[(u64)s * a.width + i];
    part[threadIdx.x] = t;
    __syncthreads();
    for (u32 o = blockDim.x / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) part[threadIdx.x] += part[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) a.out[i] = (float)part[0];
}
