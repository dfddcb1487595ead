// HostContext: the execution context of the host emulation (see context.h for the API). A CTA of
// N lanes is an EmuCta; a backend runs its lanes (fiber_cta.h: cooperative fibers on one OS
// thread, the fast default; thread_cta.h: one std::thread per lane, for ThreadSanitizer and
// AddressSanitizer) and supplies the two waits that everything here is built on: the CTA barrier
// and the rendezvous of one warp's 32 lanes. Warp-collective instructions (shuffles, mma.sync,
// ldmatrix) are emulated over that rendezvous: each lane posts its registers in its warp's staging area,
// and after the rendezvous reads what it needs of the others'. cp.async is emulated by deferring
// each copy to the wait that covers it, so that reading the destination before the wait sees
// the old (poisoned) shared memory, as it may on the GPU.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "jax_natten/exec/context.h"

namespace jax_natten::exec {

constexpr int kWarpSize = 32;

// What the lanes of one warp post for a warp-collective instruction. MMA operands are posted
// decoded to float (each lane decodes its own registers once); ldmatrix rows as they are in
// shared memory.
struct WarpStage {
  float a[kWarpSize][8];
  float b[kWarpSize][4];
  uint32_t word[kWarpSize];
  uint16_t row[kWarpSize][8];
};

// A cp.async copy issued by a lane and not yet landed.
struct PendingCopy {
  void* smem;
  const void* gmem;
};

// One lane's outstanding cp.async copies: `copies` in issue order, `group_ends[g]` the end of
// committed group g in it (copies past the last end are issued but not committed).
struct LaneCopies {
  std::vector<PendingCopy> copies;
  std::vector<size_t> group_ends;
};

// One emulated CTA, whatever runs its lanes.
class EmuCta {
 public:
  EmuCta(int threads, Dim3 block, Dim3 grid)
      : threads_(threads), block_(block), grid_(grid), warps_((threads + kWarpSize - 1) / kWarpSize),
        copies_(threads) {}
  virtual ~EmuCta() = default;

  virtual void sync_threads() = 0;                          // __syncthreads
  virtual void sync_warp(int warp, const char* what) = 0;  // all lanes of `warp` are at `what`

  int threads() const { return threads_; }
  Dim3 block() const { return block_; }
  Dim3 grid() const { return grid_; }
  WarpStage& warp(int w) { return warps_[w]; }
  LaneCopies& copies(int lane) { return copies_[lane]; }

 private:
  int threads_;
  Dim3 block_, grid_;
  std::vector<WarpStage> warps_;
  std::vector<LaneCopies> copies_;
};

// The lane running on this OS thread and its CTA (the fiber backend sets the lane at each
// switch). Thread-local rather than in HostContext because the emulated MMA atoms are called by
// CuTe as static functions, without a context.
inline thread_local int t_lane = 0;
inline thread_local EmuCta* t_cta = nullptr;

template <class Op>
struct AtomLayouts;  // host_mma.h
template <class Op, class Layouts>
struct HostMma;
template <class Op>
struct LdsmLayouts;  // host_ldsm.h
template <class Op, class Layouts>
struct HostLdsm;

// Lands the copies of lane `lane` up to (not including) index `end`, and drops them.
inline void land_copies(LaneCopies& lane, size_t end) {
  for (size_t i = 0; i < end; ++i) {
    // Four 4-byte moves, not memcpy: the smem race shadow sees instrumented stores only.
    const auto* src = static_cast<const uint32_t*>(lane.copies[i].gmem);
    auto* dst = static_cast<uint32_t*>(lane.copies[i].smem);
    for (int w = 0; w < 4; ++w) dst[w] = src[w];
  }
  lane.copies.erase(lane.copies.begin(), lane.copies.begin() + end);
  for (size_t& g : lane.group_ends) g -= end;
}

struct HostContext {
  template <class Op>
  using mma_op = HostMma<Op, AtomLayouts<Op>>;
  template <class Op>
  using ldsm_op = HostLdsm<Op, LdsmLayouts<Op>>;

  unsigned thread_index() const { return unsigned(t_lane); }
  unsigned block_threads() const { return unsigned(t_cta->threads()); }
  Dim3 block_index() const { return t_cta->block(); }
  Dim3 grid_size() const { return t_cta->grid(); }
  void sync_threads() const { t_cta->sync_threads(); }

  template <class T>
  T shfl_xor(T value, int mask) const {
    static_assert(sizeof(T) == 4, "shfl_xor moves 4-byte values");
    const int warp = t_lane / kWarpSize, lane = t_lane % kWarpSize;
    WarpStage& stage = t_cta->warp(warp);
    std::memcpy(&stage.word[lane], &value, 4);
    t_cta->sync_warp(warp, "shfl_xor");
    T result;
    std::memcpy(&result, &stage.word[lane ^ mask], 4);
    t_cta->sync_warp(warp, "shfl_xor");  // no lane posts again before every lane has read
    return result;
  }

  // A compare-and-swap loop on the float's bits: a real atomic, so that ThreadSanitizer sees the
  // lanes' (and, were CTAs ever run concurrently, the CTAs') additions as synchronized.
  void atomic_add(float* gmem, float value) const {
    auto* word = reinterpret_cast<uint32_t*>(gmem);
    uint32_t expected = __atomic_load_n(word, __ATOMIC_RELAXED);
    for (;;) {
      float sum;
      std::memcpy(&sum, &expected, 4);
      sum += value;
      uint32_t desired;
      std::memcpy(&desired, &sum, 4);
      if (__atomic_compare_exchange_n(word, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return;
    }
  }

  void cp_async_16(void* smem, const void* gmem) const { t_cta->copies(t_lane).copies.push_back({smem, gmem}); }
  void cp_async_commit() const {
    LaneCopies& lane = t_cta->copies(t_lane);
    lane.group_ends.push_back(lane.copies.size());
  }
  template <int N>
  void cp_async_wait() const {
    LaneCopies& lane = t_cta->copies(t_lane);
    const int groups = static_cast<int>(lane.group_ends.size());
    if (groups <= N) return;
    const size_t end = lane.group_ends[groups - N - 1];
    lane.group_ends.erase(lane.group_ends.begin(), lane.group_ends.begin() + (groups - N));
    land_copies(lane, end);
  }
};

}  // namespace jax_natten::exec
