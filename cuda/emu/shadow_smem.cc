// Runtime of the shared-memory race shadow (exec/shadow_smem.h); compiled WITHOUT -fsanitize and
// linked instead of libtsan into a binary whose kernel code is compiled with -fsanitize=thread
// -DJAX_NATTEN_SHADOW_SMEM. Per byte of the tracked range: the lane that wrote it and the lane(s)
// that read it in the current epoch (the accesses since the last CTA barrier).
#define JAX_NATTEN_SHADOW_SMEM
#include "jax_natten/exec/shadow_smem.h"

#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

constexpr int16_t kNobody = -1, kSeveral = -2;
struct Cell {
  uint32_t epoch;  // a stale epoch: untouched in this one
  int16_t writer, reader;
};
uintptr_t g_base, g_bytes;  // g_bytes == 0: not tracking
const int* g_lane;
uint32_t g_epoch;
std::vector<Cell> g_cells;
long g_races;  // since begin()
int g_printed;  // in this process: the first few say enough

void report(int lane, const char* op, size_t offset, int other, const char* other_op) {
  ++g_races;
  if (++g_printed > 5) return;
  if (other == kSeveral) {
    std::fprintf(stderr, "smem race: lane %d %s smem+%zu, which several lanes %s since the last __syncthreads\n", lane,
                 op, offset, other_op);
  } else {
    std::fprintf(stderr, "smem race: lane %d %s smem+%zu, which lane %d %s since the last __syncthreads\n", lane, op,
                 offset, other, other_op);
  }
}

void access(const void* p, size_t n, bool write) {
  const uintptr_t offset = uintptr_t(p) - g_base;
  if (offset >= g_bytes) return;  // not shared memory: stacks, global memory, the emulator's state
  const auto lane = static_cast<int16_t>(*g_lane);
  for (uintptr_t i = offset; i < offset + n && i < g_bytes; ++i) {
    Cell& c = g_cells[i];
    if (c.epoch != g_epoch) c = {g_epoch, kNobody, kNobody};
    if (c.writer != kNobody && c.writer != lane) return report(lane, write ? "writes" : "reads", i, c.writer, "wrote");
    if (write && c.reader != kNobody && c.reader != lane) return report(lane, "writes", i, c.reader, "read");
    if (write) {
      c.writer = lane;
    } else {
      c.reader = (c.reader == kNobody || c.reader == lane) ? lane : kSeveral;
    }
  }
}

}  // namespace

namespace jax_natten::exec::shadow {
void begin(const void* smem, size_t bytes, const int* lane) {
  g_cells.assign(bytes, Cell{0, kNobody, kNobody});
  g_base = uintptr_t(smem), g_bytes = bytes, g_lane = lane, g_epoch = 1, g_races = 0;
}
void barrier() { ++g_epoch; }
long end() {
  g_bytes = 0;
  return g_races;
}
}  // namespace jax_natten::exec::shadow

// What GCC's -fsanitize=thread instrumentation calls around loads, stores and atomics.
extern "C" {
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}
void __tsan_read_range(void* p, unsigned long n) { access(p, n, false); }
void __tsan_write_range(void* p, unsigned long n) { access(p, n, true); }
#define JAX_NATTEN_TSAN_ACCESS(n)                                             \
  void __tsan_read##n(void* p) { access(p, n, false); }                      \
  void __tsan_write##n(void* p) { access(p, n, true); }                      \
  void __tsan_unaligned_read##n(void* p) { access(p, n, false); }            \
  void __tsan_unaligned_write##n(void* p) { access(p, n, true); }
JAX_NATTEN_TSAN_ACCESS(1)
JAX_NATTEN_TSAN_ACCESS(2)
JAX_NATTEN_TSAN_ACCESS(4)
JAX_NATTEN_TSAN_ACCESS(8)
JAX_NATTEN_TSAN_ACCESS(16)
// Atomics (static-initialisation guards, the thread backend's mutexes) are not shared memory.
#define JAX_NATTEN_TSAN_ATOMIC(bits, T)                                                                      \
  T __tsan_atomic##bits##_load(const volatile T* p, int mo) { return __atomic_load_n(p, mo); }               \
  void __tsan_atomic##bits##_store(volatile T* p, T v, int mo) { __atomic_store_n(p, v, mo); }               \
  T __tsan_atomic##bits##_exchange(volatile T* p, T v, int mo) { return __atomic_exchange_n(p, v, mo); }     \
  T __tsan_atomic##bits##_fetch_add(volatile T* p, T v, int mo) { return __atomic_fetch_add(p, v, mo); }     \
  T __tsan_atomic##bits##_fetch_sub(volatile T* p, T v, int mo) { return __atomic_fetch_sub(p, v, mo); }     \
  int __tsan_atomic##bits##_compare_exchange_strong(volatile T* p, T* e, T v, int mo, int fmo) {             \
    return __atomic_compare_exchange_n(p, e, v, false, mo, fmo);                                             \
  }                                                                                                          \
  int __tsan_atomic##bits##_compare_exchange_weak(volatile T* p, T* e, T v, int mo, int fmo) {               \
    return __atomic_compare_exchange_n(p, e, v, true, mo, fmo);                                              \
  }
JAX_NATTEN_TSAN_ATOMIC(8, uint8_t)
JAX_NATTEN_TSAN_ATOMIC(16, uint16_t)
JAX_NATTEN_TSAN_ATOMIC(32, uint32_t)
JAX_NATTEN_TSAN_ATOMIC(64, uint64_t)
void __tsan_atomic_thread_fence(int mo) { __atomic_thread_fence(mo); }
void __tsan_atomic_signal_fence(int mo) { __atomic_signal_fence(mo); }
}
