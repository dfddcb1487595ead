// The grid runner of the host emulation: runs the CTAs of a launch (all of them, or a chosen
// subset) one after the other on the calling thread, each with the chosen backend and with its
// own shared memory, poisoned (0xff bytes: NaN in float32, float16 and bfloat16) so that a read
// of shared memory nobody wrote shows in the results.
//
//   run_grid<K>(lanes, grid, args...)        a CTA-level kernel K (device_context.cuh's
//                                            cta_kernel contract: K::kThreads, K::Shared,
//                                            K::run(ctx, smem, args...)) over `grid`
//   run_blocks<K>(lanes, grid, blocks, args...)  only the CTAs listed in `blocks`
//
// A second template argument replaces HostContext by another context (tests use contexts that
// break one thing on purpose, to show that the checks catch it). The emulated MMA and ldmatrix
// atoms (host_mma.h, host_ldsm.h; CuTe) come with the kernel headers that name them, so that a
// unit of kernels without tensor cores (the naive ones) parses no CuTe.
#pragma once

#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "jax_natten/exec/fiber_cta.h"
#include "jax_natten/exec/host_context.h"
#include "jax_natten/exec/shadow_smem.h"
#include "jax_natten/exec/thread_cta.h"

namespace jax_natten::exec {

enum class Lanes { kFibers, kThreads };

// One CTA of kernel K at block index `block`.
template <class K, class Ctx = HostContext, class... Args>
void run_cta(Lanes lanes, Dim3 grid, Dim3 block, const Args&... args) {
  using Shared = typename K::Shared;
  constexpr size_t kAlign = alignof(Shared) > 128 ? alignof(Shared) : 128;
  struct FreeAligned {
    void operator()(void* p) const { ::operator delete(p, std::align_val_t(kAlign)); }
  };
  std::unique_ptr<void, FreeAligned> memory(::operator new(sizeof(Shared), std::align_val_t(kAlign)));
  std::memset(memory.get(), 0xff, sizeof(Shared));
  auto& smem = *static_cast<Shared*>(memory.get());
  auto lane_body = [&] { K::run(Ctx{}, smem, args...); };
  if (lanes == Lanes::kThreads) {
    ThreadCta cta(K::kThreads, block, grid);
    cta.run(lane_body);
  } else {
    FiberCta cta(K::kThreads, block, grid);
    shadow::begin(memory.get(), sizeof(Shared), &t_lane);
    cta.run(lane_body);
    if (long races = shadow::end(); races > 0) {
      std::fprintf(stderr, "jax_natten: %ld shared-memory races in block (%u, %u, %u)\n", races, block.x, block.y,
                   block.z);
      std::abort();
    }
  }
}

template <class K, class Ctx = HostContext, class... Args>
void run_blocks(Lanes lanes, Dim3 grid, const std::vector<Dim3>& blocks, const Args&... args) {
  for (const Dim3& block : blocks) run_cta<K, Ctx>(lanes, grid, block, args...);
}

template <class K, class Ctx = HostContext, class... Args>
void run_grid(Lanes lanes, Dim3 grid, const Args&... args) {
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) run_cta<K, Ctx>(lanes, grid, Dim3{x, y, z}, args...);
    }
  }
}

}  // namespace jax_natten::exec
