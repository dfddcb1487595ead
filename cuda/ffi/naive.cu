// FFI handlers of the naive unfused operators PN, NN and IN (see params.h for what each computes).
// Handler = unpack buffers -> UnfusedParams -> typed launch.
#include <cuda_runtime.h>

#include "jax_natten/ffi_util.h"
#include "jax_natten/naive_kernels.cuh"
#include "jax_natten/params.h"
#include "xla/ffi/api/ffi.h"

namespace jax_natten {
namespace {

constexpr int kThreads = 256;

using Ints = ffi::Span<const int64_t>;

ffi::Error CommonParams(const TokenLayout& layout, int64_t heads_kv, Ints kernel_size, Ints stride, Ints dilation,
                        Ints is_causal, float scale, UnfusedParams* p) {
  if (ffi::Error error = ReadGrid(layout, kernel_size, stride, dilation, is_causal, &p->grid); error.failure()) {
    return error;
  }
  if (heads_kv < 1 || layout.heads % heads_kv != 0) {
    return ffi::Error::InvalidArgument("query heads must be a multiple of key/value heads");
  }
  p->batch = layout.batch;
  p->tokens = layout.tokens;
  p->heads = static_cast<int>(layout.heads);
  p->heads_kv = static_cast<int>(heads_kv);
  p->window = 1;
  p->rpb_window = 1;
  for (int a = 0; a < p->grid.rank; ++a) {
    p->window *= p->grid.axis[a].kernel_size;
    p->rpb_window *= 2 * p->grid.axis[a].kernel_size - 1;
  }
  p->rpb_batch = 0;
  p->scale = scale;
  p->empty_value = 0.f;
  return ffi::Error::Success();
}

// out[b, x, h, t] = scale * q . k[nbr_t(x)] (+ rpb); rpb is empty or [*copies, heads, prod(2k-1)].
ffi::Error PnImpl(cudaStream_t stream, ffi::AnyBuffer query, ffi::AnyBuffer key, ffi::AnyBuffer rpb,
                  Ints kernel_size, Ints stride, Ints dilation, Ints is_causal, float scale, float empty_value,
                  ffi::Result<ffi::AnyBuffer> out) {
  int rank = static_cast<int>(kernel_size.size());
  TokenLayout q, k;
  if (ffi::Error e = ReadLayout(query, rank, "query", &q); e.failure()) return e;
  if (ffi::Error e = ReadLayout(key, rank, "key", &k); e.failure()) return e;
  UnfusedParams p;
  if (ffi::Error e = CommonParams(q, k.heads, kernel_size, stride, dilation, is_causal, scale, &p); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(key, rank, q, k.heads, q.dim, "key"); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(*out, rank, q, q.heads, p.window, "output"); e.failure()) return e;
  p.dim = static_cast<int>(q.dim);
  p.empty_value = empty_value;
  if (rpb.element_count() > 0) {
    int64_t per_copy = q.heads * p.rpb_window;
    int64_t copies = rpb.element_count() / per_copy;
    if (copies * per_copy != rpb.element_count() || p.batch % copies != 0) {
      return ffi::Error::InvalidArgument("rpb: expected [heads, 2*kernel_size-1 per axis]");
    }
    p.rpb_batch = copies;
  }
  if (key.element_type() != query.element_type() || (p.rpb_batch > 0 && rpb.element_type() != query.element_type())) {
    return ffi::Error::InvalidArgument("query, key and rpb must have one dtype");
  }
  return DispatchDtypes(query.element_type(), out->element_type(), [&](auto tw, auto t) {
    using TW = typename decltype(tw)::type;
    using T = typename decltype(t)::type;
    naive::pn_kernel<TW, T><<<GridSize(p.batch * p.tokens * p.heads * p.window, kThreads), kThreads, 0, stream>>>(
        p, static_cast<const T*>(query.untyped_data()), static_cast<const T*>(key.untyped_data()),
        static_cast<const T*>(rpb.untyped_data()), static_cast<TW*>(out->untyped_data()));
    return LastCudaError("na_pn_naive");
  });
}

// out[b, x, h, :] = scale * sum_t weights[b, x, h, t] * value[nbr_t(x)].
ffi::Error NnImpl(cudaStream_t stream, ffi::AnyBuffer weights, ffi::AnyBuffer value, Ints kernel_size, Ints stride,
                  Ints dilation, Ints is_causal, float scale, ffi::Result<ffi::AnyBuffer> out) {
  int rank = static_cast<int>(kernel_size.size());
  TokenLayout w, v;
  if (ffi::Error e = ReadLayout(weights, rank, "weights", &w); e.failure()) return e;
  if (ffi::Error e = ReadLayout(value, rank, "value", &v); e.failure()) return e;
  UnfusedParams p;
  if (ffi::Error e = CommonParams(w, v.heads, kernel_size, stride, dilation, is_causal, scale, &p); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(weights, rank, w, w.heads, p.window, "weights"); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(value, rank, w, v.heads, v.dim, "value"); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(*out, rank, w, w.heads, v.dim, "output"); e.failure()) return e;
  if (out->element_type() != value.element_type()) return ffi::Error::InvalidArgument("output dtype must be value's");
  p.dim = static_cast<int>(v.dim);
  return DispatchDtypes(value.element_type(), weights.element_type(), [&](auto tw, auto t) {
    using TW = typename decltype(tw)::type;
    using T = typename decltype(t)::type;
    naive::nn_kernel<TW, T><<<GridSize(p.batch * p.tokens * p.heads * p.dim, kThreads), kThreads, 0, stream>>>(
        p, static_cast<const TW*>(weights.untyped_data()), static_cast<const T*>(value.untyped_data()),
        static_cast<T*>(out->untyped_data()));
    return LastCudaError("na_nn_naive");
  });
}

// out[b, y, hk, :] = scale * sum over (x, t, h in group hk) with nbr_t(x) = y of weights[b, x, h, t] * values[b, x, h].
ffi::Error InImpl(cudaStream_t stream, ffi::AnyBuffer weights, ffi::AnyBuffer values, Ints kernel_size, Ints stride,
                  Ints dilation, Ints is_causal, float scale, ffi::Result<ffi::AnyBuffer> out) {
  int rank = static_cast<int>(kernel_size.size());
  TokenLayout w, o;
  if (ffi::Error e = ReadLayout(weights, rank, "weights", &w); e.failure()) return e;
  if (ffi::Error e = ReadLayout(*out, rank, "output", &o); e.failure()) return e;
  UnfusedParams p;
  if (ffi::Error e = CommonParams(w, o.heads, kernel_size, stride, dilation, is_causal, scale, &p); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(weights, rank, w, w.heads, p.window, "weights"); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(values, rank, w, w.heads, o.dim, "values"); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(*out, rank, w, o.heads, o.dim, "output"); e.failure()) return e;
  if (out->element_type() != values.element_type()) return ffi::Error::InvalidArgument("output dtype must be values'");
  p.dim = static_cast<int>(o.dim);
  return DispatchDtypes(values.element_type(), weights.element_type(), [&](auto tw, auto t) {
    using TW = typename decltype(tw)::type;
    using T = typename decltype(t)::type;
    naive::in_kernel<TW, T><<<GridSize(p.batch * p.tokens * p.heads_kv * p.dim, kThreads), kThreads, 0, stream>>>(
        p, static_cast<const TW*>(weights.untyped_data()), static_cast<const T*>(values.untyped_data()),
        static_cast<T*>(out->untyped_data()));
    return LastCudaError("na_in_naive");
  });
}

}  // namespace
}  // namespace jax_natten

namespace ffi = xla::ffi;
using jax_natten::Ints;

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenPnNaive, jax_natten::PnImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Attr<Ints>("kernel_size")
                                  .Attr<Ints>("stride")
                                  .Attr<Ints>("dilation")
                                  .Attr<Ints>("is_causal")
                                  .Attr<float>("scale")
                                  .Attr<float>("empty_value")
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenNnNaive, jax_natten::NnImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Attr<Ints>("kernel_size")
                                  .Attr<Ints>("stride")
                                  .Attr<Ints>("dilation")
                                  .Attr<Ints>("is_causal")
                                  .Attr<float>("scale")
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenInNaive, jax_natten::InImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Attr<Ints>("kernel_size")
                                  .Attr<Ints>("stride")
                                  .Attr<Ints>("dilation")
                                  .Attr<Ints>("is_causal")
                                  .Attr<float>("scale")
                                  .Ret<ffi::AnyBuffer>());
