// Conversions between the storage dtypes and the float32 that every kernel accumulates in (device
// code, and host code for the emulation: cuda_fp16.h and cuda_bf16.h convert on the host too).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "jax_natten/neighborhood.h"

namespace jax_natten {

JAX_NATTEN_HOST_DEVICE float to_float(float x) { return x; }
JAX_NATTEN_HOST_DEVICE float to_float(__half x) { return __half2float(x); }
JAX_NATTEN_HOST_DEVICE float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
JAX_NATTEN_HOST_DEVICE T from_float(float x);
template <>
JAX_NATTEN_HOST_DEVICE float from_float<float>(float x) { return x; }
template <>
JAX_NATTEN_HOST_DEVICE __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
JAX_NATTEN_HOST_DEVICE __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

}  // namespace jax_natten
