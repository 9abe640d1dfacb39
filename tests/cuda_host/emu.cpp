// The CPU emulator's scheduler and its C ABI, compiled together with a kernel source:
//
//   g++ -std=c++17 -O1 -ffp-contract=off -shared -fPIC
//       -DDITAC_KERNEL_SOURCE='"ops/cuda/ditac.cu"' tests/cuda_host/emu.cpp -o libditac_emu.so
//
// (tests/cuda_host/emu.rs builds it, from $DITAC_CUDA_SOURCE when set.) See cuda_emu.h for the
// execution model. One launch at a time in the process (a mutex): threadIdx and friends and the
// static shared arrays are process-wide.
#include "cuda_emu.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>
#include <sys/mman.h>
#include <ucontext.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

// Context switches: on x86-64 six callee-saved registers and the
// stack pointer, by hand (glibc's swapcontext makes a sigprocmask system call per switch, which
// dominated the run time); elsewhere (or with -DCUDA_EMU_UCONTEXT) ucontext.
#if defined(__x86_64__) && !defined(CUDA_EMU_UCONTEXT)
#define EMU_FAST_SWITCH 1
extern "C" void cuda_emu_switch(void** save_sp, void* to_sp);
asm(R"(
.text
.globl cuda_emu_switch
.type cuda_emu_switch, @function
cuda_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size cuda_emu_switch, .-cuda_emu_switch
)");
#endif

#include DITAC_KERNEL_SOURCE

extern "C" {
extern unsigned char __start_cuda_emu_shared[] __attribute__((weak));
extern unsigned char __stop_cuda_emu_shared[] __attribute__((weak));
}

namespace cuda_emu {

dim3 thread_idx, block_idx, block_dim, grid_dim;

namespace {

enum State { RUNNABLE, AT_BARRIER, AT_WARP, DONE };

struct Fiber {
#ifdef EMU_FAST_SWITCH
    void* sp = nullptr;
#else
    ucontext_t uc;
#endif
    State state = DONE;
    unsigned tid = 0;
    void* fake = nullptr;  // AddressSanitizer's fake stack of this thread
};

struct Warp {
    unsigned arrived = 0;  // lanes waiting (bit mask)
    unsigned mask = 0;     // the mask the first lane gave
    int kind = 0;
    uint64_t vals[32];
    uint64_t done[32];  // the values of the last completed collective
};

const size_t STACK = 256 * 1024;

struct Launch {
    void (*kernel)(const void*) = nullptr;
    const void* args = nullptr;
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    unsigned char* stacks = nullptr;
    size_t stacks_len = 0;
#ifdef EMU_FAST_SWITCH
    void* sched_sp = nullptr;
#else
    ucontext_t sched;
#endif
    Fiber* cur = nullptr;
    unsigned barrier = 0;  // threads waiting at __syncthreads
    unsigned live = 0;     // threads not done
    bool failed = false;
    std::string error;
    unsigned char* dyn = nullptr;
    size_t dyn_len = 0;
    std::vector<std::pair<uintptr_t, uintptr_t>> regions;
    unsigned long long switches = 0;
#ifdef EMU_ASAN
    const void* sched_bottom = nullptr;
    size_t sched_size = 0;
#endif
};

Launch* L = nullptr;
thread_local std::string last_error;

// Back to the scheduler; returns when the scheduler resumes this thread.
void yield() {
    Fiber* f = L->cur;
    L->switches++;
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(f->state == DONE ? nullptr : &f->fake, L->sched_bottom, L->sched_size);
#endif
#ifdef EMU_FAST_SWITCH
    cuda_emu_switch(&f->sp, L->sched_sp);
#else
    swapcontext(&f->uc, &L->sched);
#endif
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(f->fake, &L->sched_bottom, &L->sched_size);
#endif
}

[[noreturn]] void fail_here(const std::string& msg) {
    L->failed = true;
    if (L->error.empty()) {
        char where[96];
        snprintf(where, sizeof where, " (block %u, thread %u)", block_idx.x, thread_idx.x);
        L->error = msg + where;
    }
    // Never resumed: the scheduler abandons the launch.
    for (;;) yield();
}

void release_barrier() {
    for (auto& f : L->fibers)
        if (f.state == AT_BARRIER) f.state = RUNNABLE;
    L->barrier = 0;
}

void thread_main() {
    L->kernel(L->args);
    Fiber* f = L->cur;
    f->state = DONE;
    L->live--;
    const unsigned lane = f->tid & 31u;
    Warp& w = L->warps[f->tid >> 5];
    if ((w.mask >> lane) & 1u && w.arrived)
        fail_here("a lane exited while its warp waits for it at a collective");
    if (L->barrier && L->barrier == L->live) release_barrier();
    yield();
    // A done thread is never resumed.
    abort();
}

// makecontext passes ints: the entry takes no argument (L->cur is the thread).
void entry() {
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &L->sched_bottom, &L->sched_size);
#endif
    thread_main();
}

void poison_shared() __attribute__((no_sanitize_address));
void poison_shared() {
    // Static shared arrays: everything in the section (ASan's redzones included: not through
    // the instrumented memset).
    if (__start_cuda_emu_shared && __stop_cuda_emu_shared)
        for (volatile unsigned char* p = __start_cuda_emu_shared; p < __stop_cuda_emu_shared; p++) *p = 0xff;
}

void run_block(unsigned b, const std::vector<unsigned>& order) {
    block_idx = dim3{b, 0, 0};
    poison_shared();
    std::memset(L->dyn, 0xff, L->dyn_len);
    const unsigned n = block_dim.x;
    L->live = n;
    L->barrier = 0;
    for (auto& w : L->warps) w = Warp{};
    for (unsigned t = 0; t < n; t++) {
        Fiber& f = L->fibers[t];
        f.tid = t;
        f.state = RUNNABLE;
#ifdef EMU_FAST_SWITCH
        // The first switch "returns" into entry() with the stack aligned as after a call: a
        // dummy return address at top − 8, entry at top − 16, six zeroed registers below.
#ifdef EMU_ASAN
        // The previous block's abandoned frames left their redzones in the shadow.
        __asan_unpoison_memory_region(L->stacks + (size_t)t * STACK, STACK);
#endif
        void** top = (void**)(L->stacks + (size_t)(t + 1) * STACK);
        top[-1] = nullptr;
        top[-2] = (void*)&entry;
        for (int r = 3; r <= 8; r++) top[-r] = nullptr;
        f.sp = (void*)(top - 8);
#else
        getcontext(&f.uc);
        f.uc.uc_stack.ss_sp = L->stacks + (size_t)t * STACK;
        f.uc.uc_stack.ss_size = STACK;
        f.uc.uc_link = nullptr;
        makecontext(&f.uc, entry, 0);
#endif
    }
    while (L->live) {
        bool ran = false;
        for (unsigned t : order) {
            Fiber& f = L->fibers[t];
            if (f.state != RUNNABLE) continue;
            ran = true;
            L->cur = &f;
            thread_idx = dim3{t, 0, 0};
            L->switches++;
#ifdef EMU_ASAN
            void* fake = nullptr;
            __sanitizer_start_switch_fiber(&fake, L->stacks + (size_t)t * STACK, STACK);
#endif
#ifdef EMU_FAST_SWITCH
            cuda_emu_switch(&L->sched_sp, f.sp);
#else
            swapcontext(&L->sched, &f.uc);
#endif
#ifdef EMU_ASAN
            __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
            if (L->failed) return;
        }
        if (!ran) {
            char m[160];
            snprintf(m, sizeof m,
                     "deadlock in block %u: %u threads at __syncthreads, the others of %u live at warp "
                     "collectives",
                     b, L->barrier, L->live);
            L->failed = true;
            L->error = m;
            return;
        }
    }
}

}  // namespace

unsigned char* dynamic_shared() { return L->dyn; }

void syncthreads() {
    Fiber* f = L->cur;
    const unsigned lane = f->tid & 31u;
    Warp& w = L->warps[f->tid >> 5];
    if (w.arrived && ((w.mask >> lane) & 1u))
        fail_here("__syncthreads while lanes of this warp wait at a warp collective");
    f->state = AT_BARRIER;
    L->barrier++;
    if (L->barrier == L->live) release_barrier();
    yield();
}

const uint64_t* warp_collective(int kind, unsigned mask, uint64_t v) {
    Fiber* f = L->cur;
    const unsigned lane = f->tid & 31u;
    const unsigned wi = f->tid >> 5;
    Warp& w = L->warps[wi];
    if (!((mask >> lane) & 1u)) fail_here("a warp collective whose mask leaves out the calling lane");
    const unsigned exists = (block_dim.x - wi * 32 >= 32) ? 0xffffffffu : ((1u << (block_dim.x - wi * 32)) - 1u);
    if (mask & ~exists) fail_here("a warp collective's mask names lanes the block does not have");
    if (w.arrived == 0) {
        w.mask = mask;
        w.kind = kind;
    } else if (w.mask != mask || w.kind != kind) {
        char m[160];
        snprintf(m, sizeof m, "lanes of warp %u at different collectives (kind %d mask %08x vs kind %d mask %08x)", wi,
                 w.kind, w.mask, kind, mask);
        fail_here(m);
    }
    for (unsigned l = 0; l < 32; l++) {
        if (!((mask >> l) & 1u)) continue;
        const Fiber& o = L->fibers[wi * 32 + l];
        if (o.state == DONE) fail_here("a warp collective waits for a lane that has exited");
        if (o.state == AT_BARRIER) fail_here("a warp collective waits for a lane that is at __syncthreads");
    }
    w.vals[lane] = v;
    w.arrived |= 1u << lane;
    f->state = AT_WARP;
    if (w.arrived == mask) {
        std::memcpy(w.done, w.vals, sizeof w.vals);
        for (unsigned l = 0; l < 32; l++)
            if ((mask >> l) & 1u) L->fibers[wi * 32 + l].state = RUNNABLE;
        w.arrived = 0;
    }
    yield();
    return w.done;
}

void check_global(const void* p, unsigned long bytes, const char* what) {
    if (L->regions.empty()) return;
    const uintptr_t a = (uintptr_t)p;
    for (auto& r : L->regions)
        if (a >= r.first && a + bytes <= r.second) return;
    char m[128];
    snprintf(m, sizeof m, "%s of %lu bytes at %p: outside every global buffer", what, bytes, p);
    fail_here(m);
}

void fail(const char* fmt, ...) {
    char m[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    fail_here(m);
}

}  // namespace cuda_emu

// ---------------------------------------------------------------------------------------------
// The C ABI (tests/cuda_host/emu.rs)

namespace {

struct Entry {
    const char* name;
    size_t args;
    void (*run)(const void*);
};

#define EMU_KERNEL(name, Args) {#name, sizeof(Args), [](const void* a) { name(*(const Args*)a); }}
const Entry KERNELS[] = {
    EMU_KERNEL(ditac_fwd_f32, FwdArgs),   EMU_KERNEL(ditac_fwd_f16, FwdArgs),
    EMU_KERNEL(ditac_fwd_bf16, FwdArgs),  EMU_KERNEL(ditac_grad_f32, GradArgs),
    EMU_KERNEL(ditac_grad_f16, GradArgs), EMU_KERNEL(ditac_grad_bf16, GradArgs),
    EMU_KERNEL(ditac_grad_reduce, ReduceArgs),
};

std::mutex launch_lock;
std::vector<std::pair<uintptr_t, uintptr_t>> regions;
unsigned long long total_switches = 0;

uint64_t next(uint64_t& s) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

// 0: ascending, 1: descending, else a permutation drawn from the seed.
std::vector<unsigned> order(unsigned n, uint64_t seed) {
    std::vector<unsigned> o(n);
    for (unsigned i = 0; i < n; i++) o[i] = seed == 1 ? n - 1 - i : i;
    if (seed > 1) {
        uint64_t s = seed * 0x9E3779B97F4A7C15ull | 1;
        for (unsigned i = n; i > 1; i--) std::swap(o[i - 1], o[next(s) % i]);
    }
    return o;
}

void set_error(char* err, size_t len, const std::string& m) {
    if (err && len) snprintf(err, len, "%s", m.c_str());
}

}  // namespace

extern "C" {

// Version of this ABI (emu.rs checks it).
int ditac_emu_abi() { return 1; }

// The global buffers `__ldg` may read: `n` pairs (start, end) of addresses; n = 0 clears.
void ditac_emu_regions(const uint64_t* pairs, size_t n) {
    std::lock_guard<std::mutex> g(launch_lock);
    regions.clear();
    for (size_t i = 0; i < n; i++) regions.emplace_back((uintptr_t)pairs[2 * i], (uintptr_t)pairs[2 * i + 1]);
}

// Context switches made so far (how much the scheduler interleaved).
unsigned long long ditac_emu_switches() { return total_switches; }

// Runs kernel `name` over a 1-D grid: `args` is its argument struct (`args_len` bytes: checked
// against the struct the source declares). `block_seed` orders the blocks, `thread_seed` the
// threads within a block pass. 0 on success; else the message in `err`.
int ditac_emu_launch(const char* name, unsigned grid, unsigned block, unsigned smem, const void* args,
                     size_t args_len, uint64_t block_seed, uint64_t thread_seed, char* err, size_t err_len) {
    std::lock_guard<std::mutex> g(launch_lock);
    const Entry* k = nullptr;
    for (auto& e : KERNELS)
        if (std::strcmp(e.name, name) == 0) k = &e;
    if (!k) {
        set_error(err, err_len, std::string("no kernel ") + name);
        return 1;
    }
    if (args_len != k->args) {
        set_error(err, err_len,
                  std::string(name) + ": argument struct of " + std::to_string(args_len) + " bytes, the source's has " +
                      std::to_string(k->args));
        return 1;
    }
    if (grid == 0 || block == 0 || block > 1024 || block % 32) {
        set_error(err, err_len, "grid and block must be ≥ 1, block a multiple of 32 up to 1024");
        return 1;
    }
    cuda_emu::Launch l;
    l.kernel = k->run;
    // The argument struct lives where the kernel can read it for the whole launch.
    std::vector<unsigned char> argbuf((const unsigned char*)args, (const unsigned char*)args + args_len);
    l.args = argbuf.data();
    l.fibers.resize(block);
    l.warps.resize((block + 31) / 32);
    l.regions = regions;
    l.stacks_len = (size_t)block * cuda_emu::STACK;
    void* st = mmap(nullptr, l.stacks_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (st == MAP_FAILED) {
        set_error(err, err_len, "mmap of the thread stacks failed");
        return 1;
    }
    l.stacks = (unsigned char*)st;
    // Exactly `smem` bytes (AddressSanitizer then sees an overrun of dynamic shared memory).
    l.dyn = (unsigned char*)std::malloc(smem ? smem : 1);
    l.dyn_len = smem;
    cuda_emu::L = &l;
    cuda_emu::grid_dim = dim3{grid, 1, 1};
    cuda_emu::block_dim = dim3{block, 1, 1};
    const auto blocks = order(grid, block_seed);
    const auto threads = order(block, thread_seed);
    for (unsigned b : blocks) {
        cuda_emu::run_block(b, threads);
        if (l.failed) break;
    }
    cuda_emu::L = nullptr;
    total_switches += l.switches;
    std::free(l.dyn);
    munmap(st, l.stacks_len);
    if (l.failed) {
        set_error(err, err_len, std::string(name) + ": " + l.error);
        return 1;
    }
    return 0;
}

}  // extern "C"
