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

// The tile shape: kWarps warps of 16 query rows each (a Q tile of 16 kWarps rows) by KV tiles of
// JAX_NATTEN_FUSED_KV_ROWS keys while a K/V row (head-dim class x element bytes) has at most 256
// bytes, proportionally fewer for wider rows (half at float16/bfloat16 head dim 256 and float32
// 128, a quarter at float32 256), so that two K/V stages stay within shared memory: at most 64
// KiB of K/V and 128 KiB a CTA (float32, 256), within the 163 KiB of an sm_80 SM. Registers do
// not grow with the element: the accumulators are float32 in every dtype, and the float32
// operands are split one k-block and one atom at a time (benchmarks/results/fused_static.md).
// Default 4 warps by 64 keys; a build switches every instantiation at once with
// -DJAX_NATTEN_FUSED_WARPS=N -DJAX_NATTEN_FUSED_KV_ROWS=M (CMake: the cache variables of the same
// names; benchmarks/fused_static.py: --warps, --kv-rows). The planner reads the built shape from
// the extension (fused.cu: JaxNattenFusedQTileRows, JaxNattenFusedKvTileRows) and the handler
// refuses boxes of another size.
#ifndef JAX_NATTEN_FUSED_WARPS
#define JAX_NATTEN_FUSED_WARPS 4
#endif
#ifndef JAX_NATTEN_FUSED_KV_ROWS
#define JAX_NATTEN_FUSED_KV_ROWS 64
#endif
constexpr int kWarps = JAX_NATTEN_FUSED_WARPS;
constexpr int kQTileRows = 16 * kWarps;
constexpr int kv_tile_rows(int head_dim_class, int element_bytes) {
  const int row_bytes = head_dim_class * element_bytes;
  return row_bytes <= 256 ? JAX_NATTEN_FUSED_KV_ROWS : JAX_NATTEN_FUSED_KV_ROWS * 256 / row_bytes;
}

template <class Elem, int kHeadDim>
using ForwardConfig = Config<Elem, kHeadDim, kQTileRows, kv_tile_rows(kHeadDim, sizeof(Elem)), kWarps>;

}  // namespace jax_natten::fused
