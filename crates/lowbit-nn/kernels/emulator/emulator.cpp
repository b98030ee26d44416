// lowbit CUDA host emulator: runs the kernels of kernels/fake_quant.cu (the exact source,
// compiled as C++ with cuda_host.h) on the CPU, bit for bit as the GPU computes them, with
// warp-synchronous semantics for the warp collectives.
//
// Build (from crates/lowbit-nn; the Rust tests run exactly this):
//
//   c++ -std=c++17 -O2 -ffp-contract=off -fno-fast-math -Wall -Wno-unknown-pragmas -I kernels/emulator -I kernels -include cuda_host.h kernels/emulator/emulator.cpp -o EXE
//
// Add -DLB_EMU_SELFTEST for the extra test kernels of selftest_kernels.cuh (selftest.py).
//
// Usage:
//   EXE JOB OUT    run the launches of the job file JOB, write the final buffers to OUT
//   EXE --list     print the registered kernels and their parameters
// Set LB_EMU_VERBOSE=1 to print the wall time of every launch on stderr.
//
// Job file (little-endian):
//   8 bytes magic "LBEMU" 0x01 0x00 0x00
//   u32 n_buffers; each: u64 byte_len, byte_len bytes (initial contents)
//   u32 n_launches; each:
//     u32 name_len, name bytes (ASCII); u32 grid_x; u32 block_x (a multiple of 32, <= 1024)
//     u32 n_args; each: u8 kind
//       kind 0 (pointer): u32 buffer index, u64 byte offset (<= byte_len, aligned to the
//                         pointee type's alignment)
//       kind 1 (value):   u32 len (== sizeof the parameter), len bytes
// Result file: 8 bytes "LBEMUOUT", u32 n_buffers, each: u64 byte_len, byte_len bytes.
// OUT is written only when every launch succeeded.
//
// Exit status: 0 success; 2 a job error (malformed or inconsistent job, I/O, environment);
// 3 a kernel fault (warp-collective misuse, a write past the end of a buffer, an invalid
// memory access, ...). Every error is one line on stderr starting with "lowbit-cuda-emu:".
//
// Execution model: the blocks of a launch run one after another, and within a block its warps
// one after another. The 32 lanes of a warp are ucontext fibers on this one OS thread: a lane
// runs until it calls a warp collective or returns; once every lane still running waits at a
// collective, the scheduler checks that all 32 lanes are there with the same operation
// (anything else is undefined behaviour on the GPU and reported as a fault), computes every
// lane's result and resumes lanes 0..31 in order. Atomics and memory accesses are therefore
// sequential and deterministic.
//
// Memory: every buffer is its own mapping, page aligned (so 256-byte aligned as CUDA
// allocations are), the bytes after its end up to the next page filled with a canary pattern
// (checked after every launch) and PROT_NONE guard pages on both sides (an access there is
// reported with the kernel, block, warp and lane that made it).
#include "cuda_host.h" // force-included as well; repeated for readers and tools

// ============================================================================================
// Runtime: errors, buffers, fibers, warp collectives
// ============================================================================================
namespace lb_emu {
namespace {

constexpr int kExitJob = 2;
constexpr int kExitFault = 3;
constexpr unsigned kWarpSize = 32;
constexpr unsigned kFullMask = 0xFFFFFFFFu;
constexpr size_t kFiberStack = 256 * 1024; // per lane
constexpr size_t kStackGuard = 64 * 1024;  // PROT_NONE below each lane stack (multiple of pages)
constexpr size_t kAltStack = 64 * 1024;    // for the fatal-signal handler

// What is running, for error messages (also read by the signal handler).
struct Running {
    const char* kernel = nullptr; // null outside launches
    unsigned launch = 0;
    unsigned block = 0;
    unsigned warp = 0;
    unsigned lane = 0;
};
Running g_run;

// One-line error on stderr, then exit. `code`: kExitJob or kExitFault.
[[noreturn]] __attribute__((format(printf, 2, 3))) void fail(int code, const char* fmt, ...) {
    std::fflush(stdout);
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    std::fprintf(stderr, "lowbit-cuda-emu: %s\n", msg);
    std::fflush(stderr);
    std::_Exit(code);
}

std::string strf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string strf(const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

// "kernel K block B warp W" (+ " lane L (threadIdx.x T)") for kernel faults.
std::string where(bool with_lane) {
    std::string s = strf("kernel %s block %u warp %u", g_run.kernel, g_run.block, g_run.warp);
    if (with_lane)
        s += strf(" lane %u (threadIdx.x %u)", g_run.lane, g_run.warp * kWarpSize + g_run.lane);
    return s;
}

// The file name of a call site, without its directories.
const char* base_name(const char* path) {
    const char* slash = std::strrchr(path, '/');
    return slash != nullptr ? slash + 1 : path;
}

// ---- buffers --------------------------------------------------------------------------------

struct Buffer {
    unsigned char* data = nullptr; // start of the contents (page aligned)
    uint64_t len = 0;              // contents
    size_t span = 0;               // contents + canary: whole pages
    unsigned char* map = nullptr;  // guard page, `span` bytes, guard page
    size_t map_len = 0;
};
std::vector<Buffer> g_buffers;
size_t g_page = 4096;

// Canary byte `k` bytes past the end of a buffer (position-dependent, so that a stray
// constant store is unlikely to rewrite it unchanged).
unsigned char canary_byte(size_t k) { return static_cast<unsigned char>(0xA5u ^ (k * 0x9Du)); }

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

Buffer alloc_buffer(uint64_t len, size_t index) {
    Buffer b;
    b.len = len;
    if (len > (uint64_t{1} << 46)) fail(kExitJob, "buffer %zu: %llu bytes is too large", index,
                                        static_cast<unsigned long long>(len));
    b.span = round_up(static_cast<size_t>(len), g_page);
    b.map_len = b.span + 2 * g_page;
    void* m = mmap(nullptr, b.map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        fail(kExitJob, "cannot allocate buffer %zu (%llu bytes): %s", index,
             static_cast<unsigned long long>(len), std::strerror(errno));
    b.map = static_cast<unsigned char*>(m);
    b.data = b.map + g_page;
    if (mprotect(b.map, g_page, PROT_NONE) != 0 ||
        mprotect(b.data + b.span, g_page, PROT_NONE) != 0)
        fail(kExitJob, "cannot protect the guard pages of buffer %zu: %s", index,
             std::strerror(errno));
    for (size_t k = 0; k < b.span - len; k++) b.data[len + k] = canary_byte(k);
    return b;
}

// After a launch: every canary intact, else the kernel wrote past the end of a buffer.
void check_canaries(const char* kernel) {
    for (size_t i = 0; i < g_buffers.size(); i++) {
        const Buffer& b = g_buffers[i];
        for (size_t k = 0; k < b.span - b.len; k++) {
            if (b.data[b.len + k] != canary_byte(k))
                fail(kExitFault,
                     "kernel %s wrote past the end of buffer %zu (%llu bytes; byte %zu past the "
                     "end changed)",
                     kernel, i, static_cast<unsigned long long>(b.len), k);
        }
    }
}

// ---- fibers and the warp scheduler ----------------------------------------------------------

enum class LaneState : unsigned char { Runnable, Waiting, Done };

// A lane fiber and, while it waits at a collective, what it asked for.
struct Lane {
    ucontext_t ctx;
    LaneState state = LaneState::Done;
    Op op = Op::SyncWarp;
    unsigned size = 0; // operand bytes
    int arg = 0;
    int width = 0;
    const char* file = "";
    int line = 0;
    unsigned long long value = 0;
    unsigned long long result = 0;
};

struct Fibers {
    ucontext_t scheduler;
    Lane lanes[kWarpSize];
    const std::function<void()>* body = nullptr; // runs the kernel for the current thread
    unsigned current = 0;                        // lane being resumed
    unsigned char* stacks = nullptr;             // per lane: guard region, then the stack
    size_t slot = 0;
};
Fibers g_fibers;

// The body of every fiber: run the kernel for the thread the scheduler assigned, report
// completion, wait to be resumed for the next thread. Fibers live for the whole process.
void fiber_main() {
    const unsigned me = g_fibers.current;
    for (;;) {
        (*g_fibers.body)();
        g_fibers.lanes[me].state = LaneState::Done;
        swapcontext(&g_fibers.lanes[me].ctx, &g_fibers.scheduler);
    }
}

void init_fibers() {
    g_fibers.slot = kStackGuard + kFiberStack;
    void* m = mmap(nullptr, g_fibers.slot * kWarpSize, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        fail(kExitJob, "cannot allocate the lane stacks: %s", std::strerror(errno));
    g_fibers.stacks = static_cast<unsigned char*>(m);
    for (unsigned l = 0; l < kWarpSize; l++) {
        unsigned char* slot = g_fibers.stacks + l * g_fibers.slot;
        if (mprotect(slot, kStackGuard, PROT_NONE) != 0)
            fail(kExitJob, "cannot protect a lane stack guard region: %s", std::strerror(errno));
        Lane& lane = g_fibers.lanes[l];
        if (getcontext(&lane.ctx) != 0) fail(kExitJob, "getcontext: %s", std::strerror(errno));
        lane.ctx.uc_stack.ss_sp = slot + kStackGuard;
        lane.ctx.uc_stack.ss_size = kFiberStack;
        lane.ctx.uc_link = nullptr; // fiber_main never returns
        makecontext(&lane.ctx, fiber_main, 0);
    }
}

const char* op_name(Op op) {
    switch (op) {
    case Op::Shfl: return "__shfl_sync";
    case Op::ShflUp: return "__shfl_up_sync";
    case Op::ShflDown: return "__shfl_down_sync";
    case Op::ShflXor: return "__shfl_xor_sync";
    case Op::All: return "__all_sync";
    case Op::Any: return "__any_sync";
    case Op::Ballot: return "__ballot_sync";
    case Op::ReduceAdd: return "__reduce_add_sync(unsigned)";
    case Op::ReduceMin: return "__reduce_min_sync(unsigned)";
    case Op::ReduceMax: return "__reduce_max_sync(unsigned)";
    case Op::ReduceAnd: return "__reduce_and_sync";
    case Op::ReduceOr: return "__reduce_or_sync";
    case Op::ReduceXor: return "__reduce_xor_sync";
    case Op::ReduceAddSigned: return "__reduce_add_sync(int)";
    case Op::ReduceMinSigned: return "__reduce_min_sync(int)";
    case Op::ReduceMaxSigned: return "__reduce_max_sync(int)";
    case Op::SyncWarp: return "__syncwarp";
    }
    return "?";
}

bool is_shuffle(Op op) {
    return op == Op::Shfl || op == Op::ShflUp || op == Op::ShflDown || op == Op::ShflXor;
}

std::string site(const Lane& l) {
    return strf("%s (%s:%d)", op_name(l.op), base_name(l.file), l.line);
}

// The lane a shuffle reads, as PTX shfl.sync defines it: the source lane / offset is taken
// modulo 32, the warp is split into segments of `width` lanes, and a source outside the
// permitted range (below the segment for up; past the segment's end for down, xor and idx)
// yields the caller's own value.
unsigned shuffle_source(Op op, unsigned lane, int arg, int width) {
    const int seg_mask = static_cast<int>(kWarpSize) - width; // c[12:8]
    const int b = arg & 31;
    const int ln = static_cast<int>(lane);
    const int min_lane = ln & seg_mask;
    const int clamp = op == Op::ShflUp ? 0 : 31;                // c[4:0]
    const int max_lane = (ln & seg_mask) | (clamp & ~seg_mask);
    int j = ln;
    bool ok = false;
    switch (op) {
    case Op::ShflUp: j = ln - b; ok = j >= max_lane; break;
    case Op::ShflDown: j = ln + b; ok = j <= max_lane; break;
    case Op::ShflXor: j = ln ^ b; ok = j <= max_lane; break;
    default: j = min_lane | (b & ~seg_mask); ok = j <= max_lane; break;
    }
    return ok ? static_cast<unsigned>(j) : lane;
}

// Every lane waits at a collective: check they agree and compute their results.
void resolve_collective() {
    Lane* lanes = g_fibers.lanes;
    const Lane& first = lanes[0];
    for (unsigned l = 1; l < kWarpSize; l++) {
        if (lanes[l].op != first.op)
            fail(kExitFault,
                 "%s: lanes wait at different warp collectives: lane 0 at %s, lane %u at %s",
                 where(false).c_str(), site(first).c_str(), l, site(lanes[l]).c_str());
        if (lanes[l].size != first.size)
            fail(kExitFault,
                 "%s: lanes pass operands of different sizes to %s: %u bytes at lane 0 (%s:%d), "
                 "%u bytes at lane %u (%s:%d)",
                 where(false).c_str(), op_name(first.op), first.size, base_name(first.file),
                 first.line, lanes[l].size, l, base_name(lanes[l].file), lanes[l].line);
    }
    const Op op = first.op;
    if (is_shuffle(op)) {
        for (unsigned l = 0; l < kWarpSize; l++)
            lanes[l].result = lanes[shuffle_source(op, l, lanes[l].arg, lanes[l].width)].value;
    } else {
        // Warp-wide folds: the same result for every lane.
        unsigned long long r = 0;
        switch (op) {
        case Op::All: r = 1; break;
        case Op::ReduceMin: r = 0xFFFFFFFFull; break;
        case Op::ReduceAnd: r = 0xFFFFFFFFull; break;
        case Op::ReduceMinSigned: r = 0x7FFFFFFFull; break;
        case Op::ReduceMaxSigned: r = 0x80000000ull; break;
        default: r = 0; break;
        }
        for (unsigned l = 0; l < kWarpSize; l++) {
            const unsigned int v = static_cast<unsigned int>(lanes[l].value);
            const int sv = static_cast<int>(v);
            switch (op) {
            case Op::All: r = r && v != 0u; break;
            case Op::Any: r = r || v != 0u; break;
            case Op::Ballot: r |= static_cast<unsigned long long>(v != 0u) << l; break;
            case Op::ReduceAdd:
            case Op::ReduceAddSigned: r = static_cast<unsigned int>(r + v); break;
            case Op::ReduceMin: r = std::min<unsigned long long>(r, v); break;
            case Op::ReduceMax: r = std::max<unsigned long long>(r, v); break;
            case Op::ReduceAnd: r &= v; break;
            case Op::ReduceOr: r |= v; break;
            case Op::ReduceXor: r ^= v; break;
            case Op::ReduceMinSigned:
                r = static_cast<unsigned int>(std::min(static_cast<int>(r), sv));
                break;
            case Op::ReduceMaxSigned:
                r = static_cast<unsigned int>(std::max(static_cast<int>(r), sv));
                break;
            default: break; // SyncWarp: no value
            }
        }
        for (unsigned l = 0; l < kWarpSize; l++) lanes[l].result = r;
    }
    for (unsigned l = 0; l < kWarpSize; l++) lanes[l].state = LaneState::Runnable;
}

// A 32-bit lane mask as text, e.g. "16 lanes (mask 0x0000ffff)".
std::string lane_set(unsigned mask) {
    return strf("%d lane%s (mask 0x%08x)", __builtin_popcount(mask),
                __builtin_popcount(mask) == 1 ? "" : "s", mask);
}

// Runs warp `warp` of block `block` of the current launch to completion.
void run_warp(unsigned block, unsigned warp) {
    g_run.block = block;
    g_run.warp = warp;
    Lane* lanes = g_fibers.lanes;
    for (unsigned l = 0; l < kWarpSize; l++) lanes[l].state = LaneState::Runnable;
    const dim3 block_dim = blockDim, grid_dim = gridDim;
    for (;;) {
        for (unsigned l = 0; l < kWarpSize; l++) {
            if (lanes[l].state != LaneState::Runnable) continue;
            g_fibers.current = l;
            g_run.lane = l;
            threadIdx = uint3{warp * kWarpSize + l, 0, 0};
            blockIdx = uint3{block, 0, 0};
            blockDim = block_dim;
            gridDim = grid_dim;
            swapcontext(&g_fibers.scheduler, &lanes[l].ctx);
        }
        unsigned waiting = 0, done = 0;
        for (unsigned l = 0; l < kWarpSize; l++) {
            if (lanes[l].state == LaneState::Waiting) waiting |= 1u << l;
            if (lanes[l].state == LaneState::Done) done |= 1u << l;
        }
        if (waiting == 0) return;
        if (done != 0) {
            const Lane& w = lanes[__builtin_ctz(waiting)];
            fail(kExitFault,
                 "%s: %s returned while %s wait at %s with the full mask (undefined behaviour on "
                 "a GPU: every lane named in the mask must reach the collective)",
                 where(false).c_str(), lane_set(done).c_str(), lane_set(waiting).c_str(),
                 site(w).c_str());
        }
        resolve_collective();
    }
}

// ---- signals --------------------------------------------------------------------------------

// Async-signal-safe message assembly for the fatal-signal handler.
struct SignalMessage {
    char text[768];
    size_t n = 0;
    void put(const char* s) {
        while (*s != '\0' && n + 1 < sizeof text) text[n++] = *s++;
    }
    void dec(unsigned long long v) {
        char d[24];
        int i = 0;
        do d[i++] = static_cast<char>('0' + v % 10); while ((v /= 10) != 0 && i < 24);
        while (i > 0 && n + 1 < sizeof text) text[n++] = d[--i];
    }
    void hex(unsigned long long v) {
        put("0x");
        char d[16];
        int i = 0;
        do d[i++] = "0123456789abcdef"[v & 15]; while ((v >>= 4) != 0 && i < 16);
        while (i > 0 && n + 1 < sizeof text) text[n++] = d[--i];
    }
};

// Where a faulting address lies: a buffer's guard pages or a lane stack's guard region.
void describe_address(SignalMessage& m, uintptr_t a) {
    for (size_t i = 0; i < g_buffers.size(); i++) {
        const Buffer& b = g_buffers[i];
        const uintptr_t data = reinterpret_cast<uintptr_t>(b.data);
        const uintptr_t map = reinterpret_cast<uintptr_t>(b.map);
        if (a >= data + b.len && a < map + b.map_len) {
            m.put(" (");
            m.dec(a - (data + b.len));
            m.put(" bytes past the end of buffer ");
            m.dec(i);
            m.put(")");
            return;
        }
        if (a >= map && a < data) {
            m.put(" (");
            m.dec(data - a);
            m.put(" bytes before the start of buffer ");
            m.dec(i);
            m.put(")");
            return;
        }
    }
    const uintptr_t stacks = reinterpret_cast<uintptr_t>(g_fibers.stacks);
    if (stacks != 0 && a >= stacks && a < stacks + g_fibers.slot * kWarpSize &&
        (a - stacks) % g_fibers.slot < kStackGuard) {
        m.put(" (lane stack overflow: each lane has ");
        m.dec(kFiberStack / 1024);
        m.put(" KiB)");
    }
}

void on_fatal_signal(int sig, siginfo_t* info, void*) {
    SignalMessage m;
    m.put("lowbit-cuda-emu: ");
    if (g_run.kernel != nullptr) {
        m.put("kernel ");
        m.put(g_run.kernel);
        m.put(" block ");
        m.dec(g_run.block);
        m.put(" warp ");
        m.dec(g_run.warp);
        m.put(" lane ");
        m.dec(g_run.lane);
        m.put(" (threadIdx.x ");
        m.dec(g_run.warp * kWarpSize + g_run.lane);
        m.put("): ");
    } else {
        m.put("internal error outside any kernel: ");
    }
    switch (sig) {
    case SIGSEGV:
    case SIGBUS:
        m.put(sig == SIGSEGV ? "invalid memory access" : "bus error");
        if (info->si_code == SI_KERNEL) {
            m.put(" (general protection fault: a misaligned vector access or a non-canonical "
                  "address)");
        } else {
            m.put(" at address ");
            m.hex(reinterpret_cast<uintptr_t>(info->si_addr));
            describe_address(m, reinterpret_cast<uintptr_t>(info->si_addr));
        }
        break;
    case SIGFPE: m.put("arithmetic exception (integer division by zero or overflow)"); break;
    case SIGILL: m.put("illegal instruction (unreachable code reached?)"); break;
    case SIGABRT: m.put("aborted (a failed assertion?)"); break;
    default: m.put("fatal signal"); break;
    }
    m.put("\n");
    ssize_t ignored = write(STDERR_FILENO, m.text, m.n);
    (void)ignored;
    _exit(kExitFault);
}

void install_signal_handlers() {
    // The handler runs on its own stack: the fault may be a lane stack overflow.
    void* alt =
        mmap(nullptr, kAltStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (alt == MAP_FAILED) fail(kExitJob, "cannot allocate the signal stack");
    stack_t ss{};
    ss.ss_sp = alt;
    ss.ss_size = kAltStack;
    if (sigaltstack(&ss, nullptr) != 0) fail(kExitJob, "sigaltstack: %s", std::strerror(errno));
    struct sigaction sa {};
    sa.sa_sigaction = on_fatal_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) sigaction(sig, &sa, nullptr);
}

// The arithmetic must be IEEE round-to-nearest-even with subnormals (no FTZ/DAZ).
void check_fp_environment() {
    if (std::fegetround() != FE_TONEAREST)
        fail(kExitJob, "internal error: the floating-point rounding mode is not nearest-even");
    volatile float min_normal = FLT_MIN, half = 0.5f;
    const float sub = min_normal * half;
    if (bit_cast<unsigned int>(sub) != 0x00400000u)
        fail(kExitJob, "internal error: subnormals are flushed to zero (FTZ/DAZ set; was the "
                       "emulator linked with -ffast-math?)");
}

} // namespace

// ---- entry points used by cuda_host.h -------------------------------------------------------

unsigned long long warp_op(Op op, unsigned mask, unsigned long long value, unsigned size, int arg,
                           int width, const char* file, int line) {
    if (g_run.kernel == nullptr)
        fail(kExitJob, "internal error: %s called outside a kernel (%s:%d)", op_name(op),
             base_name(file), line);
    if (mask != kFullMask)
        fail(kExitFault, "%s: %s (%s:%d) with mask 0x%08x: the emulator supports only the full "
                         "mask 0xffffffff",
             where(true).c_str(), op_name(op), base_name(file), line, mask);
    if (width < 1 || width > static_cast<int>(kWarpSize) || (width & (width - 1)) != 0)
        fail(kExitFault, "%s: %s (%s:%d) with width %d: the width must be a power of two in 1..32",
             where(true).c_str(), op_name(op), base_name(file), line, width);
    Lane& me = g_fibers.lanes[g_fibers.current];
    me.op = op;
    me.value = value;
    me.size = size;
    me.arg = arg;
    me.width = width;
    me.file = file;
    me.line = line;
    me.state = LaneState::Waiting;
    swapcontext(&me.ctx, &g_fibers.scheduler);
    return me.result;
}

void device_fault(const char* what, const char* file, int line) {
    if (g_run.kernel == nullptr)
        fail(kExitJob, "internal error: %s (%s:%d)", what, base_name(file), line);
    fail(kExitFault, "%s: %s (%s:%d)", where(true).c_str(), what, base_name(file), line);
}

} // namespace lb_emu

// ============================================================================================
// The kernels
// ============================================================================================
#include "fake_quant.cu"
#ifdef LB_EMU_SELFTEST
#include "selftest_kernels.cuh"
#endif

// ============================================================================================
// Kernel registry, job file, main
// ============================================================================================
namespace lb_emu {
namespace {

// A job argument, checked against its parameter before the launch runs.
struct Arg {
    bool pointer = false;
    uint32_t buffer = 0;
    uint64_t offset = 0;
    std::vector<unsigned char> bytes; // value arguments
};

struct Param {
    bool pointer;
    size_t size;  // value parameters: sizeof
    size_t align; // pointer parameters: alignof the pointee (1 for void)
    std::string type;
};

struct Kernel {
    std::string name;
    std::vector<Param> params;
    // Binds checked arguments: the result runs the kernel once for the current thread.
    std::function<std::function<void()>(const std::vector<Arg>&)> bind;
};

std::map<std::string, Kernel> g_kernels;

// The spelling of T, from the compiler's function signature.
template <typename T> std::string type_name() {
    const std::string f = __PRETTY_FUNCTION__; // "... [with T = X; ...]" or "... [T = X]"
    const size_t at = f.find("T = ");
    if (at == std::string::npos) return "?";
    size_t end = f.find_first_of(";]", at);
    return f.substr(at + 4, end == std::string::npos ? std::string::npos : end - at - 4);
}

template <typename P> Param describe() {
    if constexpr (std::is_pointer<P>::value) {
        using Pointee = std::remove_cv_t<std::remove_pointer_t<P>>;
        size_t align = 1;
        if constexpr (!std::is_void<Pointee>::value) align = alignof(Pointee);
        return Param{true, sizeof(P), align, type_name<P>()};
    } else {
        static_assert(std::is_trivially_copyable<P>::value,
                      "kernel value parameters must be trivially copyable");
        return Param{false, sizeof(P), alignof(P), type_name<P>()};
    }
}

template <typename P> P unpack(const Arg& a) {
    if constexpr (std::is_pointer<P>::value) {
        return reinterpret_cast<P>(g_buffers[a.buffer].data + a.offset);
    } else {
        P v;
        std::memcpy(static_cast<void*>(&v), a.bytes.data(), sizeof(P));
        return v;
    }
}

template <typename... P, size_t... I>
std::function<void()> bind_args(void (*fn)(P...), const std::vector<Arg>& args,
                                std::index_sequence<I...>) {
    (void)args; // unused for kernels without parameters
    std::tuple<P...> values{unpack<P>(args[I])...};
    return [fn, values]() { std::apply(fn, values); };
}

// Registers kernel `fn` under `name`; the parameter types come from the function pointer.
template <typename... P> void reg(const char* name, void (*fn)(P...)) {
    Kernel k;
    k.name = name;
    k.params = {describe<P>()...};
    k.bind = [fn](const std::vector<Arg>& args) {
        return bind_args(fn, args, std::index_sequence_for<P...>{});
    };
    if (!g_kernels.emplace(name, std::move(k)).second)
        fail(kExitJob, "internal error: kernel %s registered twice", name);
}

#define LB_EMU_KERNEL(fn) reg(#fn, &fn)

// THE KERNEL LIST: it must name every `extern "C" __global__` function of fake_quant.cu
// (selftest.py compares it with the preprocessed source).
void register_kernels() {
    LB_EMU_KERNEL(lb_stats_init);

    LB_EMU_KERNEL(lb_reduce_f32_u32);
    LB_EMU_KERNEL(lb_reduce_f32_u64);
    LB_EMU_KERNEL(lb_apply_f32_u32);
    LB_EMU_KERNEL(lb_apply_f32_u64);
    LB_EMU_KERNEL(lb_cast_f32_u32);
    LB_EMU_KERNEL(lb_cast_f32_u64);
    LB_EMU_KERNEL(lb_apply_sym_f32_u32);
    LB_EMU_KERNEL(lb_apply_sym_f32_u64);
    LB_EMU_KERNEL(lb_amax_f32);
    LB_EMU_KERNEL(lb_fused_block_f32);
    LB_EMU_KERNEL(lb_tiles_gather_f32);
    LB_EMU_KERNEL(lb_tiles_scatter_f32);

    LB_EMU_KERNEL(lb_reduce_f16_u32);
    LB_EMU_KERNEL(lb_reduce_f16_u64);
    LB_EMU_KERNEL(lb_apply_f16_u32);
    LB_EMU_KERNEL(lb_apply_f16_u64);
    LB_EMU_KERNEL(lb_cast_f16_u32);
    LB_EMU_KERNEL(lb_cast_f16_u64);
    LB_EMU_KERNEL(lb_apply_sym_f16_u32);
    LB_EMU_KERNEL(lb_apply_sym_f16_u64);
    LB_EMU_KERNEL(lb_amax_f16);
    LB_EMU_KERNEL(lb_fused_block_f16);
    LB_EMU_KERNEL(lb_tiles_gather_f16);
    LB_EMU_KERNEL(lb_tiles_scatter_f16);

    LB_EMU_KERNEL(lb_reduce_bf16_u32);
    LB_EMU_KERNEL(lb_reduce_bf16_u64);
    LB_EMU_KERNEL(lb_apply_bf16_u32);
    LB_EMU_KERNEL(lb_apply_bf16_u64);
    LB_EMU_KERNEL(lb_cast_bf16_u32);
    LB_EMU_KERNEL(lb_cast_bf16_u64);
    LB_EMU_KERNEL(lb_apply_sym_bf16_u32);
    LB_EMU_KERNEL(lb_apply_sym_bf16_u64);
    LB_EMU_KERNEL(lb_amax_bf16);
    LB_EMU_KERNEL(lb_fused_block_bf16);
    LB_EMU_KERNEL(lb_tiles_gather_bf16);
    LB_EMU_KERNEL(lb_tiles_scatter_bf16);

#ifdef LB_EMU_SELFTEST
    LB_EMU_SELFTEST_KERNELS
#endif
}

// ---- job file -------------------------------------------------------------------------------

const unsigned char kJobMagic[8] = {'L', 'B', 'E', 'M', 'U', 0x01, 0x00, 0x00};
const unsigned char kOutMagic[8] = {'L', 'B', 'E', 'M', 'U', 'O', 'U', 'T'};

struct Launch {
    const Kernel* kernel = nullptr;
    uint32_t grid = 0;
    uint32_t block = 0;
    std::vector<Arg> args;
};

// Bounds-checked little-endian reader over the whole job file.
class Reader {
  public:
    Reader(std::vector<unsigned char> data, const char* path)
        : data_(std::move(data)), path_(path) {}

    void need(uint64_t n, const char* what) const {
        if (data_.size() - pos_ < n)
            fail(kExitJob, "truncated job file %s: %s needs %llu bytes at offset %zu, %zu left",
                 path_, what, static_cast<unsigned long long>(n), pos_, data_.size() - pos_);
    }
    const unsigned char* take(uint64_t n, const char* what) {
        need(n, what);
        const unsigned char* p = data_.data() + pos_;
        pos_ += n;
        return p;
    }
    uint64_t le(unsigned bytes, const char* what) {
        const unsigned char* p = take(bytes, what);
        uint64_t v = 0;
        for (unsigned i = 0; i < bytes; i++) v |= static_cast<uint64_t>(p[i]) << (8 * i);
        return v;
    }
    uint8_t u8(const char* what) { return static_cast<uint8_t>(le(1, what)); }
    uint32_t u32(const char* what) { return static_cast<uint32_t>(le(4, what)); }
    uint64_t u64(const char* what) { return le(8, what); }
    size_t pos() const { return pos_; }
    size_t left() const { return data_.size() - pos_; }
    void release() { std::vector<unsigned char>().swap(data_); }

  private:
    std::vector<unsigned char> data_;
    size_t pos_ = 0;
    const char* path_;
};

std::vector<unsigned char> read_file(const char* path) {
    FILE* f = std::fopen(path, "rb");
    if (f == nullptr) fail(kExitJob, "cannot open job file %s: %s", path, std::strerror(errno));
    std::vector<unsigned char> data;
    unsigned char chunk[1 << 16];
    size_t n;
    while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0)
        data.insert(data.end(), chunk, chunk + n);
    const bool error = std::ferror(f) != 0;
    std::fclose(f);
    if (error) fail(kExitJob, "cannot read job file %s", path);
    return data;
}

// Parses and checks the whole job (buffers allocated and filled) before anything runs.
std::vector<Launch> parse_job(const char* path) {
    Reader r(read_file(path), path);
    const unsigned char* magic = r.take(8, "the magic");
    if (std::memcmp(magic, kJobMagic, 8) != 0)
        fail(kExitJob, "%s is not an emulator job file (bad magic; expected \"LBEMU\" 01 00 00)",
             path);

    const uint32_t n_buffers = r.u32("the buffer count");
    for (uint32_t i = 0; i < n_buffers; i++) {
        const uint64_t len = r.u64("a buffer length");
        r.need(len, "buffer contents");
        Buffer b = alloc_buffer(len, i);
        std::memcpy(b.data, r.take(len, "buffer contents"), static_cast<size_t>(len));
        g_buffers.push_back(b);
    }

    std::vector<Launch> launches;
    const uint32_t n_launches = r.u32("the launch count");
    for (uint32_t li = 0; li < n_launches; li++) {
        Launch L;
        const uint32_t name_len = r.u32("a kernel name length");
        if (name_len == 0 || name_len > 256)
            fail(kExitJob, "launch %u: kernel name length %u is out of range (1..256)", li,
                 name_len);
        const unsigned char* name_bytes = r.take(name_len, "a kernel name");
        std::string name(reinterpret_cast<const char*>(name_bytes), name_len);
        for (unsigned char c : name)
            if (c < 0x21 || c > 0x7E)
                fail(kExitJob, "launch %u: the kernel name is not printable ASCII", li);
        auto it = g_kernels.find(name);
        if (it == g_kernels.end()) fail(kExitJob, "launch %u: unknown kernel %s", li, name.c_str());
        L.kernel = &it->second;
        const char* kn = L.kernel->name.c_str();
        L.grid = r.u32("grid_x");
        L.block = r.u32("block_x");
        if (L.grid == 0 || L.grid > 0x7FFFFFFFu)
            fail(kExitJob, "launch %u (%s): grid_x %u is out of range (1..2^31-1)", li, kn, L.grid);
        if (L.block == 0 || L.block % kWarpSize != 0 || L.block > 1024)
            fail(kExitJob, "launch %u (%s): block_x %u must be a multiple of 32 in 32..1024", li,
                 kn, L.block);

        const uint32_t n_args = r.u32("the argument count");
        const std::vector<Param>& params = L.kernel->params;
        if (n_args != params.size())
            fail(kExitJob, "launch %u (%s): %u argument(s) given, the kernel takes %zu", li, kn,
                 n_args, params.size());
        for (uint32_t ai = 0; ai < n_args; ai++) {
            const Param& p = params[ai];
            Arg a;
            const uint8_t kind = r.u8("an argument kind");
            if (kind > 1)
                fail(kExitJob,
                     "launch %u (%s): argument %u has unknown kind %u (0 pointer, 1 value)", li, kn,
                     ai, kind);
            a.pointer = kind == 0;
            if (a.pointer != p.pointer)
                fail(kExitJob,
                     "launch %u (%s): argument %u is a %s, parameter %u (%s) takes a %s", li, kn,
                     ai, a.pointer ? "pointer" : "value", ai, p.type.c_str(),
                     p.pointer ? "pointer" : "value");
            if (a.pointer) {
                a.buffer = r.u32("a buffer index");
                a.offset = r.u64("a buffer offset");
                if (a.buffer >= g_buffers.size())
                    fail(kExitJob, "launch %u (%s): argument %u names buffer %u of %zu", li, kn, ai,
                         a.buffer, g_buffers.size());
                const uint64_t len = g_buffers[a.buffer].len;
                if (a.offset > len)
                    fail(kExitJob,
                         "launch %u (%s): argument %u: offset %llu is past the end of buffer %u "
                         "(%llu bytes)",
                         li, kn, ai, static_cast<unsigned long long>(a.offset), a.buffer,
                         static_cast<unsigned long long>(len));
                if (a.offset % p.align != 0)
                    fail(kExitJob,
                         "launch %u (%s): argument %u (%s): offset %llu into buffer %u is not a "
                         "multiple of %zu, the pointee's alignment (a GPU access would fault)",
                         li, kn, ai, p.type.c_str(), static_cast<unsigned long long>(a.offset),
                         a.buffer, p.align);
            } else {
                const uint32_t len = r.u32("a value length");
                if (len != p.size)
                    fail(kExitJob,
                         "launch %u (%s): argument %u is %u bytes, parameter %u (%s) is %zu", li,
                         kn, ai, len, ai, p.type.c_str(), p.size);
                const unsigned char* bytes = r.take(len, "a value argument");
                a.bytes.assign(bytes, bytes + len);
            }
            L.args.push_back(std::move(a));
        }
        launches.push_back(std::move(L));
    }
    if (r.left() != 0)
        fail(kExitJob, "job file %s has %zu unexpected bytes after the last launch (offset %zu)",
             path, r.left(), r.pos());
    r.release();
    return launches;
}

double now_seconds() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

void run_launch(unsigned index, const Launch& L, bool verbose) {
    const double t0 = now_seconds();
    const std::function<void()> body = L.kernel->bind(L.args);
    g_fibers.body = &body;
    gridDim = dim3(L.grid, 1, 1);
    blockDim = dim3(L.block, 1, 1);
    g_run.launch = index;
    g_run.kernel = L.kernel->name.c_str();
    const unsigned warps = L.block / kWarpSize;
    for (unsigned b = 0; b < L.grid; b++)
        for (unsigned w = 0; w < warps; w++) run_warp(b, w);
    g_run.kernel = nullptr;
    g_fibers.body = nullptr;
    check_canaries(L.kernel->name.c_str());
    if (verbose)
        std::fprintf(stderr, "lowbit-cuda-emu: launch %u %s grid %u block %u: %.3f s\n", index,
                     L.kernel->name.c_str(), L.grid, L.block, now_seconds() - t0);
}

void write_result(const char* path) {
    FILE* f = std::fopen(path, "wb");
    if (f == nullptr)
        fail(kExitJob, "cannot create result file %s: %s", path, std::strerror(errno));
    auto put = [&](const void* p, size_t n) {
        if (n != 0 && std::fwrite(p, 1, n, f) != n)
            fail(kExitJob, "cannot write result file %s: %s", path, std::strerror(errno));
    };
    auto put_le = [&](uint64_t v, unsigned bytes) {
        unsigned char b[8];
        for (unsigned i = 0; i < bytes; i++) b[i] = static_cast<unsigned char>(v >> (8 * i));
        put(b, bytes);
    };
    put(kOutMagic, 8);
    put_le(g_buffers.size(), 4);
    for (const Buffer& b : g_buffers) {
        put_le(b.len, 8);
        put(b.data, static_cast<size_t>(b.len));
    }
    if (std::fclose(f) != 0)
        fail(kExitJob, "cannot write result file %s: %s", path, std::strerror(errno));
}

void list_kernels() {
    for (const auto& entry : g_kernels) {
        const Kernel& k = entry.second;
        std::printf("%s(", k.name.c_str());
        for (size_t i = 0; i < k.params.size(); i++) {
            const Param& p = k.params[i];
            std::printf("%s%s", i ? ", " : "", p.type.c_str());
            if (!p.pointer) std::printf(" [%zu bytes]", p.size);
        }
        std::printf(")\n");
    }
}

} // namespace
} // namespace lb_emu

int main(int argc, char** argv) {
    using namespace lb_emu;
    g_page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    install_signal_handlers();
    check_fp_environment();
    register_kernels();
    if (argc == 2 && std::strcmp(argv[1], "--list") == 0) {
        list_kernels();
        return 0;
    }
    if (argc != 3)
        fail(kExitJob, "usage: %s JOB OUT (run a job file) | %s --list (the kernels)",
             argc > 0 ? argv[0] : "emulator", argc > 0 ? argv[0] : "emulator");
    const char* verbose_env = std::getenv("LB_EMU_VERBOSE");
    const bool verbose = verbose_env != nullptr && *verbose_env != '\0' && *verbose_env != '0';
    const std::vector<Launch> launches = parse_job(argv[1]);
    init_fibers();
    for (size_t i = 0; i < launches.size(); i++)
        run_launch(static_cast<unsigned>(i), launches[i], verbose);
    write_result(argv[2]);
    return 0;
}
