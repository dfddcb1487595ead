// The fused forward's launch in the host emulation (exec/host_launch.h): the same CTA-level
// kernel as on the GPU (launch.cuh), its CTAs run one after the other on the calling thread,
// each with its K::Shared on the heap. Instantiated once per (dtype, head-dim class) in the
// emulation's generated units (CMakeLists.txt).
#pragma once

#include <cstring>

#include "jax_natten/exec/host_launch.h"
#include "jax_natten/fused/backward.h"
#include "jax_natten/fused/backward_dq.h"
#include "jax_natten/ffi_util.h"
#include "jax_natten/fused/kernel.h"
#include "jax_natten/fused/launch.h"
#include "jax_natten/fused/params.h"

namespace jax_natten::fused {

template <class Elem, int kHeadDim>
xla::ffi::Error launch_forward(const exec::HostLaunch& launch, const FusedParams& p) {
  const FusedParams padded = pad_axes(p);
  return ToError(launch.run<ForwardKernel<ForwardConfig<Elem, kHeadDim>>>(launch_grid(padded), "fused forward", padded));
}

template <class Elem, int kHeadDim>
xla::ffi::Error launch_backward(const exec::HostLaunch& launch, const BackwardParams& p) {
  if constexpr (kBackwardBuilt<Elem, kHeadDim>) {
    BackwardParams padded = p;
    padded.fwd = pad_axes(p.fwd);
    BackwardParams kv_tiles = padded;
    if (p.deterministic) {
      kv_tiles.d_query = nullptr;
    } else {
      std::memset(p.d_query, 0, sizeof(float) * p.fwd.batch * p.fwd.tokens * p.fwd.heads * p.fwd.dim);  // added to
    }
    const exec::LaunchResult kv = launch.run<BackwardKernel<BackwardConfig<Elem, kHeadDim>>>(
        backward_launch_grid(padded.fwd), "fused backward", kv_tiles);
    if (kv.kind != exec::LaunchResult::Kind::kLaunched || !p.deterministic) return ToError(kv);
    return ToError(launch.run<BackwardDqKernel<DqConfig<Elem, kHeadDim>>>(launch_grid(padded.fwd),
                                                                          "fused backward (dQ)", padded));
  } else {
    return xla::ffi::Error::InvalidArgument("fused backward: float16 / bfloat16 with head dims up to 128 only");
  }
}

}  // namespace jax_natten::fused
