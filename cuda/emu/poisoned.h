// The host-emulation handlers' output poisoning (handlers.h, fused.cc): a buffer filled with NaN
// before the kernel runs, so that an element no CTA writes shows in the results.
#pragma once

#include <cstring>

#include "xla/ffi/api/ffi.h"

namespace jax_natten::emu {

// 0xff bytes: NaN in float32, float16 and bfloat16. (An empty buffer's data may be null.)
inline xla::ffi::Result<xla::ffi::AnyBuffer> Poisoned(xla::ffi::Result<xla::ffi::AnyBuffer> out) {
  if (out->size_bytes() > 0) std::memset(out->untyped_data(), 0xff, out->size_bytes());
  return out;
}

}  // namespace jax_natten::emu
