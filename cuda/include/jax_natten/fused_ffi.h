// The FFI side of the fused forward (jax_natten/fused/), shared by both platforms (CUDA and the
// host emulation): one binding, one buffer check that fills FusedParams, and the one dispatch
// point from a call's dtype and head dims to a kernel instantiation. A platform defines its
// handler with ForwardHandler(launch, ...) and ForwardBinding(the platform's Ffi::Bind())
// (cuda/ffi/fused.cu, cuda/emu/fused.cc), launch an exec::DeviceLaunch or exec::HostLaunch.
//
// The instantiations are only declared (fused/launch.h's launch_forward): each (platform, dtype,
// head-dim class) is compiled in a generated unit of its own (CMakeLists.txt: FUSED_DTYPES x
// JAX_NATTEN_FUSED_HEAD_DIMS), from fused/launch.cuh (CUDA) or fused/host_launch.h (the host
// emulation), and jax_natten/fused_classes.h (generated) lists the built head-dim classes.
// Allocates nothing and never synchronizes with the host.
#pragma once

#include <climits>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "jax_natten/ffi_util.h"
#include "jax_natten/fused_classes.h"  // generated: JAX_NATTEN_FUSED_HEAD_DIM_CLASSES
#include "jax_natten/fused/kernel.h"
#include "jax_natten/fused/launch.h"
#include "jax_natten/fused/params.h"
#include "xla/ffi/api/ffi.h"

namespace jax_natten::fused {

using Ints = ffi::Span<const int64_t>;

// The built head-dim classes, and the KV tile rows of each for inputs of `element_bytes` bytes
// (the Q tile rows are kQTileRows).
inline std::vector<int> built_head_dim_classes() { return {JAX_NATTEN_FUSED_HEAD_DIM_CLASSES}; }
inline std::vector<int> built_kv_tile_rows(int element_bytes) {
  std::vector<int> rows;
  for (int c : built_head_dim_classes()) rows.push_back(kv_tile_rows(c, element_bytes));
  return rows;
}

namespace detail {

template <class Elem, class Launch, int kClass, int... kClasses>
ffi::Error launch_backward_class(const Launch& launch, const BackwardParams& p) {
  if (p.fwd.dim <= kClass && p.fwd.dim_v <= kClass) return launch_backward<Elem, kClass>(launch, p);
  if constexpr (sizeof...(kClasses) > 0) {
    return launch_backward_class<Elem, Launch, kClasses...>(launch, p);
  } else {
    return ffi::Error::InvalidArgument("fused: no built head-dim class holds the head dims");
  }
}

// A head-dim class is the smallest built one holding both head dims.
template <class Elem, class Launch, int kClass, int... kClasses>
ffi::Error launch_class(const Launch& launch, const FusedParams& p) {
  if (p.dim <= kClass && p.dim_v <= kClass) return launch_forward<Elem, kClass>(launch, p);
  if constexpr (sizeof...(kClasses) > 0) {
    return launch_class<Elem, Launch, kClasses...>(launch, p);
  } else {
    return ffi::Error::InvalidArgument("fused: no built head-dim class holds the head dims");
  }
}

template <class Elem, class Launch>
ffi::Error launch_built_class(const Launch& launch, const FusedParams& p) {
  return launch_class<Elem, Launch, JAX_NATTEN_FUSED_HEAD_DIM_CLASSES>(launch, p);
}

// The built head-dim class that launch_class picks (0: none).
inline int built_class(int dim, int dim_v) {
  for (int c : built_head_dim_classes()) {
    if (dim <= c && dim_v <= c) return c;
  }
  return 0;
}

inline int box_rows(const int* tile, int rank) {
  int rows = 1;
  for (int a = 0; a < rank; ++a) rows *= tile[a];
  return rows;
}

inline ffi::Error ReadTiles(Ints tile, int rank, const char* name, int* out) {
  if (static_cast<int>(tile.size()) != rank) return ffi::Error::InvalidArgument(std::string(name) + ": one entry per axis");
  for (int a = 0; a < rank; ++a) {
    if (tile[a] < 1) return ffi::Error::InvalidArgument(std::string(name) + ": entries must be positive");
    out[a] = static_cast<int>(tile[a]);
  }
  return ffi::Error::Success();
}

}  // namespace detail

// The buffers and attributes checked into *p (its pointers included).
inline ffi::Error ForwardParams(const ffi::AnyBuffer& query, const ffi::AnyBuffer& key, const ffi::AnyBuffer& value,
                                const ffi::AnyBuffer& rpb, Ints kernel_size, Ints stride, Ints dilation,
                                Ints is_causal, Ints q_tile, Ints kv_tile, float scale, ffi::AnyBuffer& out,
                                ffi::AnyBuffer& lse, FusedParams* p) {
  const int rank = static_cast<int>(kernel_size.size());
  TokenLayout q, k, v;
  if (ffi::Error e = ReadLayout(query, rank, "query", &q); e.failure()) return e;
  if (ffi::Error e = ReadLayout(key, rank, "key", &k); e.failure()) return e;
  if (ffi::Error e = ReadLayout(value, rank, "value", &v); e.failure()) return e;
  if (ffi::Error e = ReadGrid(q, kernel_size, stride, dilation, is_causal, &p->grid); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(key, rank, q, k.heads, q.dim, "key"); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(value, rank, q, k.heads, v.dim, "value"); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(out, rank, q, q.heads, v.dim, "output"); e.failure()) return e;
  if (k.heads < 1 || q.heads % k.heads != 0) {
    return ffi::Error::InvalidArgument("query heads must be a multiple of key/value heads");
  }
  if (q.dim % 8 != 0 || v.dim % 8 != 0 || q.dim > 256 || v.dim > 256) {
    return ffi::Error::InvalidArgument("fused: head dims must be multiples of 8, at most 256");
  }
  if (q.heads > 65535) return ffi::Error::InvalidArgument("fused: at most 65535 heads");
  if (ffi::Error e = detail::ReadTiles(q_tile, rank, "q_tile", p->q_tile); e.failure()) return e;
  if (ffi::Error e = detail::ReadTiles(kv_tile, rank, "kv_tile", p->kv_tile); e.failure()) return e;
  const int head_class = detail::built_class(static_cast<int>(q.dim), static_cast<int>(v.dim));
  if (head_class == 0) return ffi::Error::InvalidArgument("fused: no built head-dim class holds the head dims");
  // The tile shape depends on the element size, so the dtype is checked first.
  const ffi::DataType t = query.element_type();
  if (t != ffi::DataType::F16 && t != ffi::DataType::BF16 && t != ffi::DataType::F32) {
    return ffi::Error::InvalidArgument("fused: float16, bfloat16 or float32 inputs");
  }
  const int kv_rows = kv_tile_rows(head_class, static_cast<int>(ffi::ByteWidth(t)));
  if (detail::box_rows(p->q_tile, rank) != kQTileRows || detail::box_rows(p->kv_tile, rank) != kv_rows) {
    return ffi::Error::InvalidArgument("fused: q_tile / kv_tile boxes must hold " + std::to_string(kQTileRows) + " / " +
                                       std::to_string(kv_rows) + " rows (the built tile shape)");
  }
  p->batch = q.batch;
  p->tokens = q.tokens;
  p->heads = static_cast<int>(q.heads);
  p->heads_kv = static_cast<int>(k.heads);
  p->dim = static_cast<int>(q.dim);
  p->dim_v = static_cast<int>(v.dim);
  p->scale = scale;
  p->q = query.untyped_data();
  p->k = key.untyped_data();
  p->v = value.untyped_data();
  p->rpb = rpb.element_count() > 0 ? rpb.untyped_data() : nullptr;
  p->out = out.untyped_data();
  p->lse = static_cast<float*>(lse.untyped_data());
  if (p->rpb != nullptr) {
    int64_t per_head = 1;
    for (int a = 0; a < rank; ++a) per_head *= 2 * p->grid.axis[a].kernel_size - 1;
    if (static_cast<int64_t>(rpb.element_count()) != per_head * q.heads) return ffi::Error::InvalidArgument("rpb: expected [heads, 2*kernel_size-1 per axis]");
  }
  if (key.element_type() != t || value.element_type() != t || out.element_type() != t ||
      (p->rpb != nullptr && rpb.element_type() != t) || lse.element_type() != ffi::DataType::F32) {
    return ffi::Error::InvalidArgument("fused: query, key, value, rpb and output share one dtype; lse is float32");
  }
  if (count_q_tiles(*p) > INT_MAX) return ffi::Error::InvalidArgument("fused: too many Q tiles for one launch");
  return ffi::Error::Success();
}

// The handler: the checks, then the instantiation for the dtype and head dims on `launch`.
template <class Launch>
ffi::Error ForwardHandler(const Launch& launch, ffi::AnyBuffer query, ffi::AnyBuffer key, ffi::AnyBuffer value,
                          ffi::AnyBuffer rpb, Ints kernel_size, Ints stride, Ints dilation, Ints is_causal,
                          Ints q_tile, Ints kv_tile, float scale, ffi::Result<ffi::AnyBuffer> out,
                          ffi::Result<ffi::AnyBuffer> lse) {
  FusedParams p{};
  if (ffi::Error e = ForwardParams(query, key, value, rpb, kernel_size, stride, dilation, is_causal, q_tile, kv_tile,
                                   scale, *out, *lse, &p);
      e.failure()) {
    return e;
  }
  if (p.batch == 0 || p.tokens == 0 || p.heads == 0) return ffi::Error::Success();
  switch (query.element_type()) {
    case ffi::DataType::F16:
      return detail::launch_built_class<cute::half_t>(launch, p);
    case ffi::DataType::BF16:
      return detail::launch_built_class<cute::bfloat16_t>(launch, p);
    case ffi::DataType::F32:
      return detail::launch_built_class<float>(launch, p);
    default:
      return ffi::Error::InvalidArgument("fused: float16, bfloat16 or float32 inputs");
  }
}

// The binding, the same on both platforms; `bind` is the platform's start (on CUDA:
// Ffi::Bind().Ctx<PlatformStream<cudaStream_t>>()).
template <typename Binding>
auto ForwardBinding(Binding bind) {
  return NeighborhoodAttrs(std::move(bind).template Arg<ffi::AnyBuffer>()  // query
                               .template Arg<ffi::AnyBuffer>()         // key
                               .template Arg<ffi::AnyBuffer>()         // value
                               .template Arg<ffi::AnyBuffer>())        // rpb (empty: none)
      .template Attr<Ints>("q_tile")
      .template Attr<Ints>("kv_tile")
      .template Attr<float>("scale")
      .template Ret<ffi::AnyBuffer>()   // out
      .template Ret<ffi::AnyBuffer>();  // lse
}

// The backward's handler: the forward's checks on (query, key, value, rpb) with d_out in out's
// place and d_query's layout, then lse, delta (float32 [.., heads]), d_key and d_value checked
// against them. d_query is float32 (added to by atomics; written once with `deterministic`, params.h).
template <class Launch>
ffi::Error BackwardHandler(const Launch& launch, ffi::AnyBuffer query, ffi::AnyBuffer key, ffi::AnyBuffer value,
                           ffi::AnyBuffer rpb, ffi::AnyBuffer d_out, ffi::AnyBuffer lse, ffi::AnyBuffer delta,
                           Ints kernel_size, Ints stride, Ints dilation, Ints is_causal, Ints q_tile, Ints kv_tile,
                           float scale, bool deterministic, ffi::Result<ffi::AnyBuffer> d_query, ffi::Result<ffi::AnyBuffer> d_key,
                           ffi::Result<ffi::AnyBuffer> d_value) {
  BackwardParams p{};
  if (ffi::Error e = ForwardParams(query, key, value, rpb, kernel_size, stride, dilation, is_causal, q_tile, kv_tile,
                                   scale, d_out, lse, &p.fwd);
      e.failure()) {
    return e;
  }
  const int rank = static_cast<int>(kernel_size.size());
  TokenLayout q, k, v;
  if (ffi::Error e = ReadLayout(query, rank, "query", &q); e.failure()) return e;
  if (ffi::Error e = ReadLayout(key, rank, "key", &k); e.failure()) return e;
  if (ffi::Error e = ReadLayout(value, rank, "value", &v); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(*d_query, rank, q, q.heads, q.dim, "d_query"); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(*d_key, rank, q, k.heads, k.dim, "d_key"); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(*d_value, rank, q, k.heads, v.dim, "d_value"); e.failure()) return e;
  const ffi::DataType t = query.element_type();
  if (lse.element_count() != delta.element_count() || delta.element_type() != ffi::DataType::F32 ||
      d_query->element_type() != ffi::DataType::F32 || d_key->element_type() != t || d_value->element_type() != t) {
    return ffi::Error::InvalidArgument("fused backward: lse, delta and d_query float32, d_key and d_value the input dtype");
  }
  if (static_cast<int64_t>(lse.element_count()) != q.batch * q.tokens * q.heads) {
    return ffi::Error::InvalidArgument("fused backward: lse and delta hold one value per query row");
  }
  if (count_kv_tiles(p.fwd) > INT_MAX) return ffi::Error::InvalidArgument("fused backward: too many KV tiles for one launch");
  p.d_out = d_out.untyped_data();
  p.lse = static_cast<const float*>(lse.untyped_data());
  p.delta = static_cast<const float*>(delta.untyped_data());
  p.d_query = static_cast<float*>(d_query->untyped_data());
  p.d_key = d_key->untyped_data();
  p.d_value = d_value->untyped_data();
  p.deterministic = deterministic;
  p.fwd.out = nullptr;
  p.fwd.lse = nullptr;
  if (p.fwd.batch == 0 || p.fwd.tokens == 0 || p.fwd.heads == 0) return ffi::Error::Success();
  switch (t) {
    case ffi::DataType::F16:
      return detail::launch_backward_class<cute::half_t, Launch, JAX_NATTEN_FUSED_HEAD_DIM_CLASSES>(launch, p);
    case ffi::DataType::BF16:
      return detail::launch_backward_class<cute::bfloat16_t, Launch, JAX_NATTEN_FUSED_HEAD_DIM_CLASSES>(launch, p);
    default:
      return ffi::Error::InvalidArgument("fused backward: float16 or bfloat16 inputs");
  }
}

template <typename Binding>
auto BackwardBinding(Binding bind) {
  return NeighborhoodAttrs(std::move(bind).template Arg<ffi::AnyBuffer>()  // query
                               .template Arg<ffi::AnyBuffer>()         // key
                               .template Arg<ffi::AnyBuffer>()         // value
                               .template Arg<ffi::AnyBuffer>()         // rpb (empty: none)
                               .template Arg<ffi::AnyBuffer>()         // d_out
                               .template Arg<ffi::AnyBuffer>()         // lse
                               .template Arg<ffi::AnyBuffer>())        // delta
      .template Attr<Ints>("q_tile")
      .template Attr<Ints>("kv_tile")
      .template Attr<float>("scale")
      .template Attr<bool>("deterministic")
      .template Ret<ffi::AnyBuffer>()   // d_query
      .template Ret<ffi::AnyBuffer>()   // d_key
      .template Ret<ffi::AnyBuffer>();  // d_value
}

}  // namespace jax_natten::fused
