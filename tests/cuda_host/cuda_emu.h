// cuda_emu.h — what a CUDA kernel source needs from the toolkit, for the host C++ compiler, so
// that ops/cuda/ditac.cu itself runs on the CPU (tests/cuda_host/README.md).
//
// Execution model (strict on purpose, to make kernel bugs visible):
// * one block at a time, blocks in an order chosen by the launch's seed (ascending, descending,
//   or a random permutation);
// * every thread of the block is a cooperatively scheduled context (ucontext, one stack each)
//   that switches only at __syncthreads and at warp collectives: each thread runs to its next
//   synchronisation point before the next one starts, so a missing barrier reads what was there
//   before (the shared-memory poison), never what another thread "happened" to write in time;
// * warp collectives (__shfl*_sync, __all/__any/__ballot_sync, __match_any_sync, __syncwarp)
//   complete when every lane of the mask has arrived at the same kind of collective with the
//   same mask; their values are exchanged between the 32 lanes; a lane that exits or waits at a
//   barrier instead is reported;
// * shared memory (static, `__shared__` → a section of its own, and dynamic, exactly the
//   launch's size) is filled with 0xFF bytes (NaN for float and double) at every block start;
// * `__ldg` reads are checked against the global buffers the caller registered; with
//   AddressSanitizer (tests/cuda_host/run.sh) every global and dynamic-shared access is.
//
// Only what ops/cuda/ditac.cu (and kernels like it) use is provided; 1-D indices are complete
// dim3s but the scheduler runs 1-D grids and blocks.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#define DITAC_HOST_EMU 1

#define __device__
#define __host__
#define __global__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict
// Static shared arrays: one copy per process (blocks run one at a time), in a section of their
// own so that the scheduler can poison all of them at a block's start.
#define __shared__ static __attribute__((section("cuda_emu_shared"), aligned(16)))
// Dynamic shared memory: the kernel source declares it through this macro (its CUDA default is
// `extern __shared__ __align__(16) unsigned char name[]`).
#define DITAC_DYNAMIC_SHARED(name) unsigned char* const name = ::cuda_emu::dynamic_shared()

struct dim3 {
    unsigned x, y, z;
};
struct __attribute__((aligned(16))) uint4 {
    unsigned x, y, z, w;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
struct __attribute__((aligned(8))) uint2 {
    unsigned x, y;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

namespace cuda_emu {

// The running thread's coordinates (set by the scheduler at every switch).
extern dim3 thread_idx, block_idx, block_dim, grid_dim;

unsigned char* dynamic_shared();
void syncthreads();
// A warp collective: deposits `v`, waits for the lanes of `mask`, returns the 32 lanes' values.
const uint64_t* warp_collective(int kind, unsigned mask, uint64_t v);
// Fails the launch when [p, p + bytes) is not inside a registered global buffer.
void check_global(const void* p, unsigned long bytes, const char* what);
[[noreturn]] void fail(const char* fmt, ...);

enum Collective { SHFL = 1, SHFL_XOR, SHFL_UP, SHFL_DOWN, VOTE, MATCH, SYNCWARP };

template <typename T> inline uint64_t bits_of(T v) {
    static_assert(sizeof(T) <= 8, "warp collectives of at most 8 bytes");
    uint64_t u = 0;
    std::memcpy(&u, &v, sizeof(T));
    return u;
}
template <typename T> inline T from_bits(uint64_t u) {
    T v;
    std::memcpy(&v, &u, sizeof(T));
    return v;
}
inline unsigned lane() { return thread_idx.x & 31u; }
inline void check_width(int width) {
    if (width < 1 || width > 32 || (width & (width - 1)))
        fail("shuffle width %d is not a power of two in [1, 32]", width);
}

}  // namespace cuda_emu

#define threadIdx (::cuda_emu::thread_idx)
#define blockIdx (::cuda_emu::block_idx)
#define blockDim (::cuda_emu::block_dim)
#define gridDim (::cuda_emu::grid_dim)
#define warpSize 32

inline void __syncthreads() { ::cuda_emu::syncthreads(); }

// The source lane within the width-lane segment of this lane, as the hardware computes it.
template <typename T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    cuda_emu::check_width(width);
    const uint64_t* all = cuda_emu::warp_collective(cuda_emu::SHFL, mask, cuda_emu::bits_of(v));
    const unsigned l = cuda_emu::lane(), base = l & ~(unsigned)(width - 1);
    return cuda_emu::from_bits<T>(all[base + ((unsigned)src & (unsigned)(width - 1))]);
}
template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32) {
    cuda_emu::check_width(width);
    const uint64_t* all = cuda_emu::warp_collective(cuda_emu::SHFL_XOR, mask, cuda_emu::bits_of(v));
    const unsigned l = cuda_emu::lane(), base = l & ~(unsigned)(width - 1);
    const unsigned s = l ^ (unsigned)m;
    // A source outside the segment gives the lane its own value.
    return cuda_emu::from_bits<T>(all[(s & ~(unsigned)(width - 1)) == base ? s : l]);
}
template <typename T> inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
    cuda_emu::check_width(width);
    const uint64_t* all = cuda_emu::warp_collective(cuda_emu::SHFL_DOWN, mask, cuda_emu::bits_of(v));
    const unsigned l = cuda_emu::lane(), seg = l & (unsigned)(width - 1);
    return cuda_emu::from_bits<T>(all[seg + d < (unsigned)width ? l + d : l]);
}
template <typename T> inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
    cuda_emu::check_width(width);
    const uint64_t* all = cuda_emu::warp_collective(cuda_emu::SHFL_UP, mask, cuda_emu::bits_of(v));
    const unsigned l = cuda_emu::lane(), seg = l & (unsigned)(width - 1);
    return cuda_emu::from_bits<T>(all[seg >= d ? l - d : l]);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    const uint64_t* all = cuda_emu::warp_collective(cuda_emu::VOTE, mask, pred != 0);
    unsigned b = 0;
    for (unsigned i = 0; i < 32; i++)
        if ((mask >> i) & 1u && all[i]) b |= 1u << i;
    return b;
}
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline unsigned __activemask() { return 0xffffffffu; }
// The lanes of the mask whose value has the same bits as this lane's (the device compares the
// 32- or 64-bit pattern).
template <typename T> inline unsigned __match_any_sync(unsigned mask, T v) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "__match_any_sync of 32- or 64-bit values");
    const uint64_t* all = cuda_emu::warp_collective(cuda_emu::MATCH, mask, cuda_emu::bits_of(v));
    const uint64_t mine = all[cuda_emu::lane()];
    unsigned b = 0;
    for (unsigned i = 0; i < 32; i++)
        if ((mask >> i) & 1u && all[i] == mine) b |= 1u << i;
    return b;
}
// A barrier of the mask's lanes (and, on the device, a memory fence among them). Here it is a
// collective like the others: every lane of the mask must arrive at a __syncwarp with the same
// mask, and it is a switch point.
inline void __syncwarp(unsigned mask = 0xffffffffu) { cuda_emu::warp_collective(cuda_emu::SYNCWARP, mask, 0); }

inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }

template <typename T> inline T __ldg(const T* p) {
    cuda_emu::check_global(p, sizeof(T), "__ldg");
    return *p;
}

inline float __uint_as_float(unsigned u) { return cuda_emu::from_bits<float>(u); }
inline unsigned __float_as_uint(float f) { return (unsigned)cuda_emu::bits_of(f); }
inline float __int_as_float(int u) { return cuda_emu::from_bits<float>((unsigned)u); }
inline int __float_as_int(float f) { return (int)(unsigned)cuda_emu::bits_of(f); }
inline double __longlong_as_double(long long u) { return cuda_emu::from_bits<double>((uint64_t)u); }
inline long long __double_as_longlong(double d) { return (long long)cuda_emu::bits_of(d); }

// CUDA's device overloads of min and max.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// Atomics: blocks and threads never run at the same time, so plain read-modify-writes are
// atomic here. They are not synchronisation points (as on the device).
template <typename T> inline T atomicAdd(T* p, T v) {
    cuda_emu::check_global(p, sizeof(T), "atomicAdd");
    T o = *p;
    *p = o + v;
    return o;
}
template <typename T> inline T atomicSub(T* p, T v) {
    T o = *p;
    *p = o - v;
    return o;
}
template <typename T> inline T atomicMax(T* p, T v) {
    T o = *p;
    *p = o > v ? o : v;
    return o;
}
template <typename T> inline T atomicMin(T* p, T v) {
    T o = *p;
    *p = o < v ? o : v;
    return o;
}
template <typename T> inline T atomicExch(T* p, T v) {
    T o = *p;
    *p = v;
    return o;
}
template <typename T> inline T atomicCAS(T* p, T cmp, T v) {
    T o = *p;
    if (o == cmp) *p = v;
    return o;
}
inline void __threadfence() {}
inline void __threadfence_block() {}

// float16 and bfloat16: IEEE conversions with round to nearest even (_Float16 is GCC's
// IEEE binary16; bfloat16 by bit arithmetic, NaN kept quiet).
struct __half {
    unsigned short x;
};
struct __nv_bfloat16 {
    unsigned short x;
};
inline float __half2float(__half h) {
    _Float16 f;
    std::memcpy(&f, &h.x, 2);
    return (float)f;
}
inline __half __float2half_rn(float v) {
    _Float16 f = (_Float16)v;
    __half h;
    std::memcpy(&h.x, &f, 2);
    return h;
}
inline __half __float2half(float v) { return __float2half_rn(v); }
inline float __bfloat162float(__nv_bfloat16 b) { return __uint_as_float(((unsigned)b.x) << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(unsigned short)((u >> 16) | 0x40u)};
    u += 0x7fffu + ((u >> 16) & 1u);
    return __nv_bfloat16{(unsigned short)(u >> 16)};
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
