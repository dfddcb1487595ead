// Helpers shared by the FFI handlers (host code only, CUDA and host emulation): reading the token
// layout and the neighborhood attributes, and the ffi::Error of a launch.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "jax_natten/exec/launch_result.h"
#include "jax_natten/neighborhood.h"
#include "xla/ffi/api/ffi.h"

namespace jax_natten {

namespace ffi = xla::ffi;

inline ffi::Error ToError(const exec::LaunchResult& result) {
  switch (result.kind) {
    case exec::LaunchResult::Kind::kLaunched:
      return ffi::Error::Success();
    case exec::LaunchResult::Kind::kInvalidArgument:
      return ffi::Error::InvalidArgument(result.message);
    case exec::LaunchResult::Kind::kPlatformError:
      break;
  }
  return ffi::Error::Internal(result.message);
}

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
  const size_t entries = kernel_size.size();
  if (entries < 1 || entries > kMaxRank || stride.size() != entries || dilation.size() != entries ||
      is_causal.size() != entries) {
    return ffi::Error::InvalidArgument("kernel_size, stride, dilation and is_causal need one entry per spatial axis");
  }
  const int rank = static_cast<int>(entries);
  grid->rank = rank;
  for (int a = 0; a < rank; ++a) {
    // Checked in 64 bits before narrowing (a kernel_size of 2^32 + 3 must not pass as 3); with
    // 2 <= kernel_size, stride <= kernel_size and kernel_size * dilation <= length < 2^31, every
    // value fits an int.
    const int64_t length = layout.spatial[a], k = kernel_size[a], s = stride[a], d = dilation[a];
    if (length > INT32_MAX || k < 2 || s < 1 || d < 1 || s > k || k > length || d > length / k) {
      return ffi::Error::InvalidArgument("axis " + std::to_string(a) + ": illegal kernel_size/stride/dilation for length " +
                                         std::to_string(length));
    }
    grid->axis[a] = AxisParams{static_cast<int>(length), static_cast<int>(k), static_cast<int>(s), static_cast<int>(d),
                               is_causal[a] != 0};
  }
  return ffi::Error::Success();
}

// The neighborhood attributes that ReadGrid reads, in the order every handler's binding has them.
template <typename Binding>
auto NeighborhoodAttrs(Binding bind) {
  using Ints = ffi::Span<const int64_t>;
  return std::move(bind).template Attr<Ints>("kernel_size")
      .template Attr<Ints>("stride")
      .template Attr<Ints>("dilation")
      .template Attr<Ints>("is_causal");
}

}  // namespace jax_natten
