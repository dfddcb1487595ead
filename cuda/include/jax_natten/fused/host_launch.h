// The fused forward's launch in the host emulation (exec/host_launch.h): the same CTA-level
// kernel as on the GPU (launch.cuh), its CTAs run one after the other on the calling thread,
// each with its K::Shared on the heap. Instantiated once per (dtype, head-dim class) in the
// emulation's generated units (CMakeLists.txt).
#pragma once

#include "jax_natten/exec/host_launch.h"
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

}  // namespace jax_natten::fused
