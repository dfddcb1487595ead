// FFI handler of the fused forward (jax_natten/fused/): checks the buffers, fills FusedParams and
// launches the one instantiation that fits (dtype, head-dim class). Allocates nothing and never
// synchronizes with the host.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "jax_natten/ffi_util.h"
#include "jax_natten/fused_classes.h"  // generated: JAX_NATTEN_FUSED_HEAD_DIM_CLASSES
#include "jax_natten/fused/kernel.h"
#include "jax_natten/fused/params.h"
#include "xla/ffi/api/ffi.h"

namespace jax_natten::fused {

template <class Elem, int kHeadDim>
cudaError_t launch_forward(cudaStream_t stream, const FusedParams& p);  // launch.cuh, generated units

namespace {

using Ints = ffi::Span<const int64_t>;

// The one dispatch point: a head-dim class is the smallest built one holding both head dims.
template <class Elem, int kClass, int... kClasses>
cudaError_t launch_class(cudaStream_t stream, const FusedParams& p) {
  if (p.dim <= kClass && p.dim_v <= kClass) return launch_forward<Elem, kClass>(stream, p);
  if constexpr (sizeof...(kClasses) > 0) {
    return launch_class<Elem, kClasses...>(stream, p);
  } else {
    return cudaErrorInvalidValue;
  }
}

template <class Elem>
cudaError_t launch_built_class(cudaStream_t stream, const FusedParams& p) {
  return launch_class<Elem, JAX_NATTEN_FUSED_HEAD_DIM_CLASSES>(stream, p);
}

// The built head-dim class that launch_class picks (0: none).
int built_class(int dim, int dim_v) {
  for (int c : {JAX_NATTEN_FUSED_HEAD_DIM_CLASSES}) {
    if (dim <= c && dim_v <= c) return c;
  }
  return 0;
}

int box_rows(const int* tile, int rank) {
  int rows = 1;
  for (int a = 0; a < rank; ++a) rows *= tile[a];
  return rows;
}

ffi::Error ReadTiles(Ints tile, int rank, const char* name, int* out) {
  if (static_cast<int>(tile.size()) != rank) return ffi::Error::InvalidArgument(std::string(name) + ": one entry per axis");
  for (int a = 0; a < rank; ++a) {
    if (tile[a] < 1) return ffi::Error::InvalidArgument(std::string(name) + ": entries must be positive");
    out[a] = static_cast<int>(tile[a]);
  }
  return ffi::Error::Success();
}

ffi::Error FusedForward(cudaStream_t stream, ffi::AnyBuffer query, ffi::AnyBuffer key, ffi::AnyBuffer value,
                        ffi::AnyBuffer rpb, Ints kernel_size, Ints stride, Ints dilation, Ints is_causal,
                        Ints q_tile, Ints kv_tile, float scale, ffi::Result<ffi::AnyBuffer> out,
                        ffi::Result<ffi::AnyBuffer> lse) {
  const int rank = static_cast<int>(kernel_size.size());
  TokenLayout q, k, v;
  if (ffi::Error e = ReadLayout(query, rank, "query", &q); e.failure()) return e;
  if (ffi::Error e = ReadLayout(key, rank, "key", &k); e.failure()) return e;
  if (ffi::Error e = ReadLayout(value, rank, "value", &v); e.failure()) return e;
  FusedParams p{};
  if (ffi::Error e = ReadGrid(q, kernel_size, stride, dilation, is_causal, &p.grid); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(key, rank, q, k.heads, q.dim, "key"); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(value, rank, q, k.heads, v.dim, "value"); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(*out, rank, q, q.heads, v.dim, "output"); e.failure()) return e;
  if (k.heads < 1 || q.heads % k.heads != 0) {
    return ffi::Error::InvalidArgument("query heads must be a multiple of key/value heads");
  }
  if (q.dim % 8 != 0 || v.dim % 8 != 0 || q.dim > 256 || v.dim > 256) {
    return ffi::Error::InvalidArgument("fused: head dims must be multiples of 8, at most 256");
  }
  if (q.heads > 65535) return ffi::Error::InvalidArgument("fused: at most 65535 heads");
  if (ffi::Error e = ReadTiles(q_tile, rank, "q_tile", p.q_tile); e.failure()) return e;
  if (ffi::Error e = ReadTiles(kv_tile, rank, "kv_tile", p.kv_tile); e.failure()) return e;
  const int head_class = built_class(static_cast<int>(q.dim), static_cast<int>(v.dim));
  if (head_class == 0) return ffi::Error::InvalidArgument("fused: no built head-dim class holds the head dims");
  const int kv_rows = kv_tile_rows(head_class, static_cast<int>(ffi::ByteWidth(query.element_type())));
  if (box_rows(p.q_tile, rank) != kQTileRows || box_rows(p.kv_tile, rank) != kv_rows) {
    return ffi::Error::InvalidArgument("fused: q_tile / kv_tile boxes must hold " + std::to_string(kQTileRows) + " / " +
                                       std::to_string(kv_rows) + " rows (the built tile shape)");
  }
  p.batch = q.batch;
  p.tokens = q.tokens;
  p.heads = static_cast<int>(q.heads);
  p.heads_kv = static_cast<int>(k.heads);
  p.dim = static_cast<int>(q.dim);
  p.dim_v = static_cast<int>(v.dim);
  p.scale = scale;
  p.q = query.untyped_data();
  p.k = key.untyped_data();
  p.v = value.untyped_data();
  p.rpb = rpb.element_count() > 0 ? rpb.untyped_data() : nullptr;
  p.out = out->untyped_data();
  p.lse = static_cast<float*>(lse->untyped_data());
  if (p.rpb != nullptr) {
    int64_t per_head = 1;
    for (int a = 0; a < rank; ++a) per_head *= 2 * p.grid.axis[a].kernel_size - 1;
    if (rpb.element_count() != per_head * q.heads) return ffi::Error::InvalidArgument("rpb: expected [heads, 2*kernel_size-1 per axis]");
  }
  const ffi::DataType t = query.element_type();
  if (key.element_type() != t || value.element_type() != t || out->element_type() != t ||
      (p.rpb != nullptr && rpb.element_type() != t) || lse->element_type() != ffi::DataType::F32) {
    return ffi::Error::InvalidArgument("fused: query, key, value, rpb and output share one dtype; lse is float32");
  }
  if (count_q_tiles(p) > INT_MAX) return ffi::Error::InvalidArgument("fused: too many Q tiles for one launch");
  if (p.batch == 0 || p.tokens == 0 || p.heads == 0) return ffi::Error::Success();
  cudaError_t status;
  switch (t) {
    case ffi::DataType::F16:
      status = launch_built_class<cute::half_t>(stream, p);
      break;
    case ffi::DataType::BF16:
      status = launch_built_class<cute::bfloat16_t>(stream, p);
      break;
    case ffi::DataType::F32:
      status = launch_built_class<float>(stream, p);
      break;
    default:
      return ffi::Error::InvalidArgument("fused: float16, bfloat16 or float32 inputs");
  }
  if (status != cudaSuccess) return ffi::Error::Internal(std::string("fused forward: ") + cudaGetErrorString(status));
  return ffi::Error::Success();
}

}  // namespace
}  // namespace jax_natten::fused

// The built head-dim classes and tile shape, for Python (bindings.cc): Q tile rows, and KV tile
// rows per class for inputs of `element_bytes` bytes.
std::vector<int> JaxNattenFusedHeadDimClasses() { return {JAX_NATTEN_FUSED_HEAD_DIM_CLASSES}; }
int JaxNattenFusedQTileRows() { return jax_natten::fused::kQTileRows; }
std::vector<int> JaxNattenFusedKvTileRows(int element_bytes) {
  std::vector<int> rows;
  for (int c : {JAX_NATTEN_FUSED_HEAD_DIM_CLASSES}) rows.push_back(jax_natten::fused::kv_tile_rows(c, element_bytes));
  return rows;
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenFusedForward, jax_natten::fused::FusedForward,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<xla::ffi::AnyBuffer>()  // query
                                  .Arg<xla::ffi::AnyBuffer>()  // key
                                  .Arg<xla::ffi::AnyBuffer>()  // value
                                  .Arg<xla::ffi::AnyBuffer>()  // rpb (empty: none)
                                  .Attr<jax_natten::fused::Ints>("kernel_size")
                                  .Attr<jax_natten::fused::Ints>("stride")
                                  .Attr<jax_natten::fused::Ints>("dilation")
                                  .Attr<jax_natten::fused::Ints>("is_causal")
                                  .Attr<jax_natten::fused::Ints>("q_tile")
                                  .Attr<jax_natten::fused::Ints>("kv_tile")
                                  .Attr<float>("scale")
                                  .Ret<xla::ffi::AnyBuffer>()   // out
                                  .Ret<xla::ffi::AnyBuffer>());  // lse
