// Helpers shared by the FFI handlers (host code only, CUDA and host emulation): reading the token
// layout and the neighborhood attributes.
#pragma once

#include <cstdint>
#include <string>

#include "jax_natten/neighborhood.h"
#include "xla/ffi/api/ffi.h"

namespace jax_natten {

namespace ffi = xla::ffi;

// A [*batch, *spatial, heads, dim] buffer; every axis before the spatial ones counts as batch,
// which is how vmapped axes fold into the batch.
struct TokenLayout {
  int64_t batch = 1;
  int64_t spatial[kMaxRank] = {};
  int64_t tokens = 1;
  int64_t heads = 0;
  int64_t dim = 0;
};

inline ffi::Error ReadLayout(const ffi::AnyBuffer& x, int rank, const char* name, TokenLayout* layout) {
  auto dims = x.dimensions();
  int ndim = static_cast<int>(dims.size());
  if (rank < 1 || rank > kMaxRank || ndim < rank + 3) {
    return ffi::Error::InvalidArgument(std::string(name) + ": expected [batch, *spatial(" + std::to_string(rank) +
                                       "), heads, dim], got rank " + std::to_string(ndim));
  }
  int first_spatial = ndim - rank - 2;
  for (int a = 0; a < first_spatial; ++a) layout->batch *= dims[a];
  for (int a = 0; a < rank; ++a) {
    layout->spatial[a] = dims[first_spatial + a];
    layout->tokens *= dims[first_spatial + a];
  }
  layout->heads = dims[ndim - 2];
  layout->dim = dims[ndim - 1];
  return ffi::Error::Success();
}

// Whether `x` has the layout `want` with `heads` heads and head dim `dim`.
inline ffi::Error ExpectLayout(const ffi::AnyBuffer& x, int rank, const TokenLayout& want, int64_t heads,
                               int64_t dim, const char* name) {
  TokenLayout got;
  if (ffi::Error error = ReadLayout(x, rank, name, &got); error.failure()) return error;
  bool same = got.batch == want.batch && got.heads == heads && got.dim == dim;
  for (int a = 0; a < rank; ++a) same = same && got.spatial[a] == want.spatial[a];
  if (!same) return ffi::Error::InvalidArgument(std::string(name) + ": shape does not match the other operands");
  return ffi::Error::Success();
}

// The neighborhood attributes (one entry per spatial axis) checked as SPEC.md requires.
inline ffi::Error ReadGrid(const TokenLayout& layout, ffi::Span<const int64_t> kernel_size,
                           ffi::Span<const int64_t> stride, ffi::Span<const int64_t> dilation,
                           ffi::Span<const int64_t> is_causal, Grid* grid) {
  int rank = static_cast<int>(kernel_size.size());
  if (rank < 1 || rank > kMaxRank || stride.size() != rank || dilation.size() != rank || is_causal.size() != rank) {
    return ffi::Error::InvalidArgument("kernel_size, stride, dilation and is_causal need one entry per spatial axis");
  }
  grid->rank = rank;
  for (int a = 0; a < rank; ++a) {
    AxisParams p{static_cast<int>(layout.spatial[a]), static_cast<int>(kernel_size[a]), static_cast<int>(stride[a]),
                 static_cast<int>(dilation[a]), is_causal[a] != 0};
    if (p.kernel_size < 2 || p.stride < 1 || p.dilation < 1 || p.stride > p.kernel_size ||
        int64_t(p.kernel_size) * p.dilation > p.length) {
      return ffi::Error::InvalidArgument("axis " + std::to_string(a) + ": illegal kernel_size/stride/dilation for length " +
                                         std::to_string(p.length));
    }
    grid->axis[a] = p;
  }
  return ffi::Error::Success();
}

}  // namespace jax_natten
