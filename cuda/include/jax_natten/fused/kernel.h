// The fused forward as a CTA-level kernel (exec/device_context.cuh's contract: kThreads, Shared,
// run): block (x, y, z) is Q tile x of head y for batches z, z + grid.z, ... The params must
// have been through pad_axes (scheduler.h). The one list of
// instantiations, and the launch shape that the handler and the planner share.
#pragma once

#include <cstdint>

#include "jax_natten/exec/context.h"
#include "jax_natten/fused/mainloop.h"
#include "jax_natten/fused/params.h"
#include "jax_natten/fused/scheduler.h"

namespace jax_natten::fused {

template <class Cfg>
struct ForwardKernel {
  using Config = Cfg;
  using Shared = typename Cfg::Shared;
  static constexpr int kThreads = Cfg::kThreads;

  template <class Ctx>
  static JAX_NATTEN_CTA void run(const Ctx& ctx, Shared& smem, const FusedParams& p) {
    const exec::Dim3 block = ctx.block_index(), grid = ctx.grid_size();
    for (int64_t batch = block.z; batch < p.batch; batch += grid.z) {
      fused_forward_cta<Cfg>(ctx, p, block.x, static_cast<int>(block.y), batch, smem);
      if (batch + grid.z < p.batch) ctx.sync_threads();  // smem is reused by the next batch
    }
  }
};

constexpr int kMaxGridZ = 65535;

inline exec::Dim3 launch_grid(const FusedParams& p) {
  return {static_cast<unsigned>(count_q_tiles(p)), static_cast<unsigned>(p.heads),
          static_cast<unsigned>(p.batch < kMaxGridZ ? p.batch : kMaxGridZ)};
}

// Tile rows per head-dim class: 64 queries (4 warps) by 64 keys; 32 keys at head dim 256 so that
// two K/V stages stay within shared memory.
template <int kHeadDim>
constexpr int kv_tile_rows() { return kHeadDim == 256 ? 32 : 64; }
constexpr int kQTileRows = 64;
constexpr int kWarps = 4;

template <class Elem, int kHeadDim>
using ForwardConfig = Config<Elem, kHeadDim, kQTileRows, kv_tile_rows<kHeadDim>(), kWarps>;

}  // namespace jax_natten::fused
