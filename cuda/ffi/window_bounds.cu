// window_bounds: the per-axis windows and inverse windows as the kernels see them, so that tests
// can hold the C++ neighborhood header against the Python module on the GPU.
#include <cuda_runtime.h>

#include "jax_natten/exec/device_launch.cuh"
#include "jax_natten/ffi_util.h"
#include "jax_natten/neighborhood.h"
#include "xla/ffi/api/ffi.h"

namespace jax_natten {
namespace {

using BoundsBuffer = ffi::Buffer<ffi::S32, 2>;

// bounds[i] = {window start, window end, inverse start, inverse end} of position i.
__global__ void window_bounds_kernel(AxisParams p, int4* bounds) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= p.length) return;
  Range w = window(p, i);
  Range inv = inverse_window(p, i);
  bounds[i] = make_int4(w.start, w.end, inv.start, inv.end);
}

ffi::Error WindowBoundsImpl(cudaStream_t stream, int64_t length, int64_t kernel_size,
                            int64_t stride, int64_t dilation, bool is_causal,
                            ffi::Result<BoundsBuffer> bounds) {
  auto dims = bounds->dimensions();
  if (dims[0] != length || dims[1] != 4) {
    return ffi::Error::InvalidArgument("window_bounds: the output must be [length, 4] int32");
  }
  AxisParams p{static_cast<int>(length), static_cast<int>(kernel_size), static_cast<int>(stride),
               static_cast<int>(dilation), is_causal};
  constexpr int kThreads = 128;
  int blocks = static_cast<int>((length + kThreads - 1) / kThreads);
  window_bounds_kernel<<<blocks, kThreads, 0, stream>>>(
      p, reinterpret_cast<int4*>(bounds->typed_data()));
  return ToError(LastCudaError("window_bounds"));
}

}  // namespace
}  // namespace jax_natten

namespace ffi = xla::ffi;

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenWindowBounds, jax_natten::WindowBoundsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Attr<int64_t>("length")
                                  .Attr<int64_t>("kernel_size")
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("dilation")
                                  .Attr<bool>("is_causal")
                                  .Ret<jax_natten::BoundsBuffer>());
