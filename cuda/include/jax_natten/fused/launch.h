// The fused forward's launch on a platform, declared for the FFI handler (fused_ffi.h) and
// defined in launch.cuh (CUDA) and host_launch.h (the host emulation); each (platform, dtype,
// head-dim class) is instantiated with JAX_NATTEN_FUSED_INSTANTIATE in a generated unit of its
// own (CMakeLists.txt; benchmarks/fused_static.py for the static gate).
#pragma once

#include "jax_natten/fused/params.h"
#include "xla/ffi/api/ffi.h"

namespace jax_natten {
namespace exec {
struct DeviceLaunch;
struct HostLaunch;
}  // namespace exec

namespace fused {

// Runs the instantiation (Elem, kHeadDim) on p (not yet through pad_axes).
template <class Elem, int kHeadDim>
xla::ffi::Error launch_forward(const exec::DeviceLaunch& launch, const FusedParams& p);  // launch.cuh
template <class Elem, int kHeadDim>
xla::ffi::Error launch_forward(const exec::HostLaunch& launch, const FusedParams& p);  // host_launch.h
// The backward of the same instantiation on p (p.fwd not yet through pad_axes); an error for
// those that have no backward (backward.h: kBackwardBuilt).
template <class Elem, int kHeadDim>
xla::ffi::Error launch_backward(const exec::DeviceLaunch& launch, const BackwardParams& p);  // launch.cuh
template <class Elem, int kHeadDim>
xla::ffi::Error launch_backward(const exec::HostLaunch& launch, const BackwardParams& p);  // host_launch.h

}  // namespace fused
}  // namespace jax_natten

// One explicit instantiation of launch_forward and launch_backward on the platform `Launch` (the
// generated units).
#define JAX_NATTEN_FUSED_INSTANTIATE(Launch, Elem, kHeadDim)                                                    \
  template xla::ffi::Error jax_natten::fused::launch_forward<Elem, kHeadDim>(const Launch&,                       \
                                                                             const jax_natten::fused::FusedParams&); \
  template xla::ffi::Error jax_natten::fused::launch_backward<Elem, kHeadDim>(                                     \
      const Launch&, const jax_natten::fused::BackwardParams&);
