// Naive unfused kernels (the paper's baseline): one thread per output element, a plain loop
// over the reduction, float32 accumulation. TW is the dtype of the attention weights (or PN's
// output): the input dtype T for the public operators, float for the attention path.
//
// Each kernel is a struct (exec/context.h): run(ctx, smem, args...) is its body, written against
// an execution context so that it runs on the GPU (the __global__ entries at the end) and in the
// host emulation (cuda/emu/); grid(p, &blocks) is its launch grid. Config is the block size
// (BlockConfig; the built one is CMakeLists.txt's UNFUSED_IMPLEMENTATIONS).
#pragma once

#include <cstdint>
#include <string>

#include "jax_natten/exec/context.h"
#if defined(__CUDACC__)
#include "jax_natten/exec/device_context.cuh"
#endif
#include "jax_natten/numeric.h"
#include "jax_natten/params.h"

namespace jax_natten::naive {

template <int kThreads_>
struct BlockConfig {
  static constexpr int kThreads = kThreads_;
};

// No shared memory.
struct NoShared {};

// Blocks of a grid-stride loop over n elements: at least one, at most 2^20.
inline exec::Dim3 grid_stride_blocks(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return {static_cast<unsigned int>(blocks < (1 << 20) ? (blocks > 0 ? blocks : 1) : (1 << 20)), 1, 1};
}

// Flat thread index, grid-stride so that any problem size fits a bounded grid.
#define JAX_NATTEN_GRID_STRIDE_LOOP(ctx, i, n)                                                 \
  for (int64_t i = ctx.block_index().x * int64_t(ctx.block_threads()) + ctx.thread_index(); i < (n); \
       i += int64_t(ctx.grid_size().x) * ctx.block_threads())

template <typename TW, typename T, class Config>
struct Pn {
  static constexpr int kThreads = Config::kThreads;
  static constexpr const char* kName = "na_pn_naive";
  using Shared = NoShared;
  static std::string grid(const UnfusedParams& p, exec::Dim3* blocks) {
    *blocks = grid_stride_blocks(p.batch * p.tokens * p.heads * p.window, kThreads);
    return {};
  }
  template <class Ctx>
  JAX_NATTEN_CTA static void run(const Ctx& ctx, Shared&, UnfusedParams p, const T* query, const T* key, const T* rpb,
                                 TW* out) {
    const int group = p.heads / p.heads_kv;
    JAX_NATTEN_GRID_STRIDE_LOOP(ctx, i, p.batch * p.tokens * p.heads * p.window) {
      int slot = static_cast<int>(i % p.window);
      int64_t row = i / p.window;  // (b, x, h)
      int h = static_cast<int>(row % p.heads);
      int64_t token = (row / p.heads) % p.tokens;
      int64_t b = row / (p.heads * p.tokens);
      Neighbor n = neighbor(p.grid, token, slot);
      if (!n.valid) {
        out[i] = from_float<TW>(p.empty_value);
        continue;
      }
      const T* q = query + row * p.dim;
      const T* k = key + ((b * p.tokens + n.token) * p.heads_kv + h / group) * p.dim;
      float acc = 0.f;
      for (int d = 0; d < p.dim; ++d) acc += to_float(q[d]) * to_float(k[d]);
      acc *= p.scale;
      if (p.rpb_batch > 0) {
        int64_t table = b / (p.batch / p.rpb_batch);
        acc += to_float(rpb[(table * p.heads + h) * p.rpb_window + n.bias_offset]);
      }
      out[i] = from_float<TW>(acc);
    }
  }
};

template <typename TW, typename T, class Config>
struct Nn {
  static constexpr int kThreads = Config::kThreads;
  static constexpr const char* kName = "na_nn_naive";
  using Shared = NoShared;
  static std::string grid(const UnfusedParams& p, exec::Dim3* blocks) {
    *blocks = grid_stride_blocks(p.batch * p.tokens * p.heads * p.dim, kThreads);
    return {};
  }
  template <class Ctx>
  JAX_NATTEN_CTA static void run(const Ctx& ctx, Shared&, UnfusedParams p, const TW* weights, const T* value, T* out) {
    const int group = p.heads / p.heads_kv;
    JAX_NATTEN_GRID_STRIDE_LOOP(ctx, i, p.batch * p.tokens * p.heads * p.dim) {
      int d = static_cast<int>(i % p.dim);
      int64_t row = i / p.dim;  // (b, x, h)
      int h = static_cast<int>(row % p.heads);
      int64_t token = (row / p.heads) % p.tokens;
      int64_t b = row / (p.heads * p.tokens);
      const TW* w = weights + row * p.window;
      float acc = 0.f;
      for (int slot = 0; slot < p.window; ++slot) {
        Neighbor n = neighbor(p.grid, token, slot);
        if (!n.valid) continue;
        acc += to_float(w[slot]) * to_float(value[((b * p.tokens + n.token) * p.heads_kv + h / group) * p.dim + d]);
      }
      out[i] = from_float<T>(p.scale * acc);
    }
  }
};

template <typename TW, typename T, class Config>
struct In {
  static constexpr int kThreads = Config::kThreads;
  static constexpr const char* kName = "na_in_naive";
  using Shared = NoShared;
  static std::string grid(const UnfusedParams& p, exec::Dim3* blocks) {
    *blocks = grid_stride_blocks(p.batch * p.tokens * p.heads_kv * p.dim, kThreads);
    return {};
  }
  template <class Ctx>
  JAX_NATTEN_CTA static void run(const Ctx& ctx, Shared&, UnfusedParams p, const TW* weights, const T* values, T* out) {
    const int group = p.heads / p.heads_kv;
    JAX_NATTEN_GRID_STRIDE_LOOP(ctx, i, p.batch * p.tokens * p.heads_kv * p.dim) {
      int d = static_cast<int>(i % p.dim);
      int64_t row = i / p.dim;  // (b, y, hk)
      int hk = static_cast<int>(row % p.heads_kv);
      int64_t key_token = (row / p.heads_kv) % p.tokens;
      int64_t b = row / (p.heads_kv * p.tokens);
      // Per axis: the key's position and the in-group range of the queries that read it.
      int key_pos[kMaxRank];
      Range queries[kMaxRank];
      int count = 1;
      for (int a = p.grid.rank - 1; a >= 0; --a) {
        key_pos[a] = static_cast<int>(key_token % p.grid.axis[a].length);
        key_token /= p.grid.axis[a].length;
        queries[a] = inverse_window(p.grid.axis[a], key_pos[a]);
        count *= queries[a].end - queries[a].start;
      }
      float acc = 0.f;
      for (int c = 0; c < count; ++c) {
        int query_pos[kMaxRank];
        for (int a = p.grid.rank - 1, rest = c; a >= 0; --a) {
          int n = queries[a].end - queries[a].start;
          query_pos[a] = (queries[a].start + rest % n) * p.grid.axis[a].dilation + key_pos[a] % p.grid.axis[a].dilation;
          rest /= n;
        }
        int64_t query_token = 0;
        int slot = 0;
        for (int a = 0; a < p.grid.rank; ++a) {
          const AxisParams& ax = p.grid.axis[a];
          query_token = query_token * ax.length + query_pos[a];
          slot = slot * ax.kernel_size + key_pos[a] / ax.dilation - window(ax, query_pos[a]).start;
        }
        for (int g = 0; g < group; ++g) {
          int64_t qrow = (b * p.tokens + query_token) * p.heads + hk * group + g;
          acc += to_float(weights[qrow * p.window + slot]) * to_float(values[qrow * p.dim + d]);
        }
      }
      out[i] = from_float<T>(p.scale * acc);
    }
  }
};

#undef JAX_NATTEN_GRID_STRIDE_LOOP

#if defined(__CUDACC__)
template <typename TW, typename T, class Config>
__global__ void pn_kernel(UnfusedParams p, const T* query, const T* key, const T* rpb, TW* out) {
  NoShared none;
  Pn<TW, T, Config>::run(exec::DeviceContext{}, none, p, query, key, rpb, out);
}

template <typename TW, typename T, class Config>
__global__ void nn_kernel(UnfusedParams p, const TW* weights, const T* value, T* out) {
  NoShared none;
  Nn<TW, T, Config>::run(exec::DeviceContext{}, none, p, weights, value, out);
}

template <typename TW, typename T, class Config>
__global__ void in_kernel(UnfusedParams p, const TW* weights, const T* values, T* out) {
  NoShared none;
  In<TW, T, Config>::run(exec::DeviceContext{}, none, p, weights, values, out);
}
#endif

}  // namespace jax_natten::naive

#if defined(__CUDACC__)
namespace jax_natten {
template <typename TW, typename T, class Config>
struct exec::DeviceEntry<naive::Pn<TW, T, Config>> {
  static constexpr auto kernel = naive::pn_kernel<TW, T, Config>;
};

template <typename TW, typename T, class Config>
struct exec::DeviceEntry<naive::Nn<TW, T, Config>> {
  static constexpr auto kernel = naive::nn_kernel<TW, T, Config>;
};

template <typename TW, typename T, class Config>
struct exec::DeviceEntry<naive::In<TW, T, Config>> {
  static constexpr auto kernel = naive::in_kernel<TW, T, Config>;
};
}  // namespace jax_natten
#endif
