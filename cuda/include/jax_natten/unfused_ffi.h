// The FFI side of the unfused operators PN, NN and IN, shared by every implementation (naive,
// gemm) and platform (CUDA, the host emulation): one binding (attributes) and one buffer check
// per operator, so that all variants take exactly the same calls, and the one dispatch point
// from a call's runtime types to a kernel instantiation. A platform defines its handlers with
// PnHandler<Impl>(launch, ...) and PnBinding(the platform's Ffi::Bind()) etc. (cuda/ffi/unfused.cu,
// cuda/emu/unfused.cc), with Impl = Naive or Gemm and launch an exec::DeviceLaunch or
// exec::HostLaunch.
//
// The kernels are only declared (unfused_instance.h): each instantiation Instance<kernel, Launch,
// operands> is compiled in a generated unit of its own, listed in CMakeLists.txt
// (jax_natten_unfused_instantiations), and the handlers' unit sees the built ones as `extern
// template` declarations and kBuilt<Instance> (jax_natten/unfused_instances.h, generated), so
// that it compiles no kernel code and a dtype pair not built returns an error.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>
#include <utility>

#include "jax_natten/ffi_util.h"
#include "jax_natten/params.h"
#include "jax_natten/unfused_instance.h"
#include "xla/ffi/api/ffi.h"

namespace jax_natten {

using Ints = ffi::Span<const int64_t>;

template <typename T>
struct TypeTag {
  using type = T;
};

// The one dispatch point: calls f(TypeTag<TW>, TypeTag<T>) for the storage dtype `t` of the
// tensors and the dtype `tw` of the attention weights (`t` itself or float32); the handlers below
// add the operator and Impl adds its configuration. The architecture is the platform's: on CUDA
// the driver picks the fatbin's code for the GPU (CMake's JAX_NATTEN_CUDA_ARCHS).
template <typename F>
ffi::Error DispatchDtypes(ffi::DataType t, ffi::DataType tw, F&& f) {
  bool weights_f32 = tw == ffi::DataType::F32;
  if (tw != t && !weights_f32) return ffi::Error::InvalidArgument("attention weights must be float32 or the input dtype");
  switch (t) {
    case ffi::DataType::F32:
      return f(TypeTag<float>{}, TypeTag<float>{});
    case ffi::DataType::F16:
      return weights_f32 ? f(TypeTag<float>{}, TypeTag<__half>{}) : f(TypeTag<__half>{}, TypeTag<__half>{});
    case ffi::DataType::BF16:
      return weights_f32 ? f(TypeTag<float>{}, TypeTag<__nv_bfloat16>{})
                         : f(TypeTag<__nv_bfloat16>{}, TypeTag<__nv_bfloat16>{});
    default:
      return ffi::Error::InvalidArgument("unsupported dtype: the CUDA kernels take float32, float16 and bfloat16");
  }
}

// Runs the instantiation I, or returns an error if the extension was built without it
// (CMake's JAX_NATTEN_CUDA_UNFUSED=minimal builds one dtype pair per kernel).
template <class I, class Launch, class... A>
ffi::Error RunBuilt(const Launch& launch, const UnfusedParams& p, A... operands) {
  if constexpr (kBuilt<I>) {
    return ToError(I::run(launch, p, operands...));
  } else {
    return ffi::Error::InvalidArgument("this dtype pair of the kernel is not built in this extension "
                                       "(JAX_NATTEN_CUDA_UNFUSED=minimal)");
  }
}

// The parameters every operator shares; `layout` is the tensor that fixes batch, tokens and heads.
inline ffi::Error CommonParams(const TokenLayout& layout, int64_t heads_kv, Ints kernel_size, Ints stride,
                               Ints dilation, Ints is_causal, float scale, UnfusedParams* p) {
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

// PN: out[b, x, h, t] = scale * q . k[nbr_t(x)] (+ rpb); rpb is empty or [*copies, heads, prod(2k-1)].
inline ffi::Error PnParams(const ffi::AnyBuffer& query, const ffi::AnyBuffer& key, const ffi::AnyBuffer& rpb,
                           Ints kernel_size, Ints stride, Ints dilation, Ints is_causal, float scale,
                           float empty_value, const ffi::AnyBuffer& out, UnfusedParams* p) {
  int rank = static_cast<int>(kernel_size.size());
  TokenLayout q, k;
  if (ffi::Error e = ReadLayout(query, rank, "query", &q); e.failure()) return e;
  if (ffi::Error e = ReadLayout(key, rank, "key", &k); e.failure()) return e;
  if (ffi::Error e = CommonParams(q, k.heads, kernel_size, stride, dilation, is_causal, scale, p); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(key, rank, q, k.heads, q.dim, "key"); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(out, rank, q, q.heads, p->window, "output"); e.failure()) return e;
  p->dim = static_cast<int>(q.dim);
  p->empty_value = empty_value;
  if (rpb.element_count() > 0) {
    const int64_t count = static_cast<int64_t>(rpb.element_count()), per_copy = q.heads * p->rpb_window;
    const int64_t copies = per_copy > 0 ? count / per_copy : 0;  // zero query heads: no rpb fits
    if (copies == 0 || copies * per_copy != count || p->batch % copies != 0) {
      return ffi::Error::InvalidArgument("rpb: expected [heads, 2*kernel_size-1 per axis]");
    }
    p->rpb_batch = copies;
  }
  if (key.element_type() != query.element_type() || (p->rpb_batch > 0 && rpb.element_type() != query.element_type())) {
    return ffi::Error::InvalidArgument("query, key and rpb must have one dtype");
  }
  return ffi::Error::Success();
}

// NN: out[b, x, h, :] = scale * sum_t weights[b, x, h, t] * value[nbr_t(x)].
inline ffi::Error NnParams(const ffi::AnyBuffer& weights, const ffi::AnyBuffer& value, Ints kernel_size, Ints stride,
                           Ints dilation, Ints is_causal, float scale, const ffi::AnyBuffer& out, UnfusedParams* p) {
  int rank = static_cast<int>(kernel_size.size());
  TokenLayout w, v;
  if (ffi::Error e = ReadLayout(weights, rank, "weights", &w); e.failure()) return e;
  if (ffi::Error e = ReadLayout(value, rank, "value", &v); e.failure()) return e;
  if (ffi::Error e = CommonParams(w, v.heads, kernel_size, stride, dilation, is_causal, scale, p); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(weights, rank, w, w.heads, p->window, "weights"); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(value, rank, w, v.heads, v.dim, "value"); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(out, rank, w, w.heads, v.dim, "output"); e.failure()) return e;
  if (out.element_type() != value.element_type()) return ffi::Error::InvalidArgument("output dtype must be value's");
  p->dim = static_cast<int>(v.dim);
  return ffi::Error::Success();
}

// IN: out[b, y, hk, :] = scale * sum over (x, t, h in group hk) with nbr_t(x) = y of weights[b, x, h, t] * values[b, x, h].
inline ffi::Error InParams(const ffi::AnyBuffer& weights, const ffi::AnyBuffer& values, Ints kernel_size, Ints stride,
                           Ints dilation, Ints is_causal, float scale, const ffi::AnyBuffer& out, UnfusedParams* p) {
  int rank = static_cast<int>(kernel_size.size());
  TokenLayout w, o;
  if (ffi::Error e = ReadLayout(weights, rank, "weights", &w); e.failure()) return e;
  if (ffi::Error e = ReadLayout(out, rank, "output", &o); e.failure()) return e;
  if (ffi::Error e = CommonParams(w, o.heads, kernel_size, stride, dilation, is_causal, scale, p); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(weights, rank, w, w.heads, p->window, "weights"); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(values, rank, w, w.heads, o.dim, "values"); e.failure()) return e;
  if (ffi::Error e = ExpectLayout(out, rank, w, o.heads, o.dim, "output"); e.failure()) return e;
  if (out.element_type() != values.element_type()) return ffi::Error::InvalidArgument("output dtype must be values'");
  p->dim = static_cast<int>(o.dim);
  return ffi::Error::Success();
}

template <class Impl, typename Launch>
ffi::Error PnHandler(const Launch& launch, ffi::AnyBuffer query, ffi::AnyBuffer key, ffi::AnyBuffer rpb,
                     Ints kernel_size, Ints stride, Ints dilation, Ints is_causal, float scale, float empty_value,
                     ffi::Result<ffi::AnyBuffer> out) {
  UnfusedParams p;
  if (ffi::Error e = PnParams(query, key, rpb, kernel_size, stride, dilation, is_causal, scale, empty_value, *out, &p);
      e.failure()) {
    return e;
  }
  return DispatchDtypes(query.element_type(), out->element_type(), [&](auto tw, auto t) {
    using TW = typename decltype(tw)::type;
    using T = typename decltype(t)::type;
    return RunBuilt<Instance<typename Impl::template Pn<TW, T>, Launch, PnOperands<TW, T>>>(
        launch, p, static_cast<const T*>(query.untyped_data()), static_cast<const T*>(key.untyped_data()),
        static_cast<const T*>(rpb.untyped_data()), static_cast<TW*>(out->untyped_data()));
  });
}

template <class Impl, typename Launch>
ffi::Error NnHandler(const Launch& launch, ffi::AnyBuffer weights, ffi::AnyBuffer value, Ints kernel_size,
                     Ints stride, Ints dilation, Ints is_causal, float scale, ffi::Result<ffi::AnyBuffer> out) {
  UnfusedParams p;
  if (ffi::Error e = NnParams(weights, value, kernel_size, stride, dilation, is_causal, scale, *out, &p); e.failure()) {
    return e;
  }
  return DispatchDtypes(value.element_type(), weights.element_type(), [&](auto tw, auto t) {
    using TW = typename decltype(tw)::type;
    using T = typename decltype(t)::type;
    return RunBuilt<Instance<typename Impl::template Nn<TW, T>, Launch, NnOperands<TW, T>>>(
        launch, p, static_cast<const TW*>(weights.untyped_data()), static_cast<const T*>(value.untyped_data()),
        static_cast<T*>(out->untyped_data()));
  });
}

template <class Impl, typename Launch>
ffi::Error InHandler(const Launch& launch, ffi::AnyBuffer weights, ffi::AnyBuffer values, Ints kernel_size,
                     Ints stride, Ints dilation, Ints is_causal, float scale, ffi::Result<ffi::AnyBuffer> out) {
  UnfusedParams p;
  if (ffi::Error e = InParams(weights, values, kernel_size, stride, dilation, is_causal, scale, *out, &p); e.failure()) {
    return e;
  }
  return DispatchDtypes(values.element_type(), weights.element_type(), [&](auto tw, auto t) {
    using TW = typename decltype(tw)::type;
    using T = typename decltype(t)::type;
    return RunBuilt<Instance<typename Impl::template In<TW, T>, Launch, InOperands<TW, T>>>(
        launch, p, static_cast<const TW*>(weights.untyped_data()), static_cast<const T*>(values.untyped_data()),
        static_cast<T*>(out->untyped_data()));
  });
}

// The attributes of the three operators, the same for every implementation and platform; `bind`
// is the platform's start (on CUDA: Ffi::Bind().Ctx<PlatformStream<cudaStream_t>>()).
template <typename Binding>
auto PnBinding(Binding bind) {
  return NeighborhoodAttrs(std::move(bind).template Arg<ffi::AnyBuffer>()  // query
                               .template Arg<ffi::AnyBuffer>()         // key
                               .template Arg<ffi::AnyBuffer>())        // rpb
      .template Attr<float>("scale")
      .template Attr<float>("empty_value")
      .template Ret<ffi::AnyBuffer>();
}

// NN and IN take the same operands: (weights, tensor).
template <typename Binding>
auto NnInBinding(Binding bind) {
  return NeighborhoodAttrs(std::move(bind).template Arg<ffi::AnyBuffer>()  // weights
                               .template Arg<ffi::AnyBuffer>())        // value (NN) / values (IN)
      .template Attr<float>("scale")
      .template Ret<ffi::AnyBuffer>();
}

}  // namespace jax_natten
