// Quick math check of the fused forward on one host thread with a scalar FMA atom: tile
// scheduler, masks, online softmax and epilogue against a float64 evaluation of neighborhood.h.
#include <cute/tensor.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "jax_natten/fused/mainloop.h"

using namespace jax_natten;
using namespace jax_natten::fused;

template <class E>
struct HostFMA {
  using DRegisters = float[1];
  using ARegisters = E[1];
  using BRegisters = E[1];
  using CRegisters = float[1];
  static void fma(float& d, const E& a, const E& b, const float& c) { d = float(a) * float(b) + c; }
};
namespace cute {
template <class E>
struct MMA_Traits<HostFMA<E>> : MMA_Traits<UniversalFMA<float, E, E, float>> {};
}  // namespace cute

struct SerialCtx {
  int thread_idx() const { return 0; }
  void sync() const {}
  float shfl_xor(float x, int) const { return x; }
  void cp_async_16(void* dst, const void* src, bool valid) const {
    if (valid) std::memcpy(dst, src, 16); else std::memset(dst, 0, 16);
  }
  void cp_async_commit() const {}
  template <int N> void cp_async_wait() const {}
};

using E = cute::half_t;
constexpr int D = 32, BQ = 16, BK = 16;
using Mma = cute::TiledMMA<cute::MMA_Atom<HostFMA<E>>, cute::Layout<cute::Shape<cute::_1, cute::_1, cute::_1>>>;
using Cfg = Config<E, D, BQ, BK, Mma, 1>;

int main() {
  std::mt19937 rng(1);
  int failures = 0;
  for (int c = 0; c < 200; ++c) {
    FusedParams p{};
    p.grid.rank = 1 + rng() % 3;
    int64_t tokens = 1;
    for (int a = 0; a < p.grid.rank; ++a) {
      AxisParams& ax = p.grid.axis[a];
      ax.dilation = 1 + rng() % 3;
      ax.kernel_size = 1 + rng() % 5;
      int minlen = ax.kernel_size * ax.dilation;
      ax.length = minlen + rng() % (p.grid.rank == 3 ? 6 : 14);
      ax.stride = 1 + rng() % ax.kernel_size;
      ax.is_causal = rng() % 3 == 0;
      tokens *= ax.length;
    }
    const int q_tiles[3][3] = {{16, 0, 0}, {4, 4, 0}, {4, 2, 2}};
    const int kv_tiles[3][3] = {{16, 0, 0}, {4, 4, 0}, {2, 4, 2}};
    for (int a = 0; a < p.grid.rank; ++a) {
      p.q_tile[a] = q_tiles[p.grid.rank - 1][a];
      p.kv_tile[a] = kv_tiles[p.grid.rank - 1][a];
    }
    p.batch = 1 + rng() % 2;
    p.tokens = tokens;
    p.heads_kv = 1 + rng() % 2;
    p.heads = p.heads_kv * (1 + rng() % 2);
    p.dim = 8 * (1 + rng() % 4);
    p.dim_v = 8 * (1 + rng() % 4);
    p.scale = 0.3f;
    bool stride1 = true, causal = false;
    for (int a = 0; a < p.grid.rank; ++a) { stride1 &= p.grid.axis[a].stride == 1; causal |= p.grid.axis[a].is_causal; }
    int rpbw = 1;
    for (int a = 0; a < p.grid.rank; ++a) rpbw *= 2 * p.grid.axis[a].kernel_size - 1;
    const bool use_rpb = stride1 && !causal && rng() % 2;
    std::normal_distribution<float> nd;
    auto fill = [&](std::vector<E>& x, size_t n) { x.resize(n); for (auto& e : x) e = E(nd(rng)); };
    std::vector<E> q, k, v, rpb, out(p.batch * tokens * p.heads * p.dim_v, E(NAN));
    std::vector<float> lse(p.batch * tokens * p.heads, NAN);
    fill(q, p.batch * tokens * p.heads * p.dim);
    fill(k, p.batch * tokens * p.heads_kv * p.dim);
    fill(v, p.batch * tokens * p.heads_kv * p.dim_v);
    fill(rpb, p.heads * rpbw);
    p.q = q.data(); p.k = k.data(); p.v = v.data(); p.rpb = use_rpb ? rpb.data() : nullptr;
    p.out = out.data(); p.lse = lse.data();
    std::vector<E> smem(Cfg::kSmemBytes / sizeof(E));
    SerialCtx ctx;
    for (int64_t b = 0; b < p.batch; ++b)
      for (int h = 0; h < p.heads; ++h)
        for (int64_t i = 0; i < count_q_tiles(p); ++i) fused_forward_cta<Cfg>(ctx, p, i, h, b, smem.data());
    int window = 1;
    for (int a = 0; a < p.grid.rank; ++a) window *= p.grid.axis[a].kernel_size;
    double err2 = 0, ref2 = 0, lse_err = 0;
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t x = 0; x < tokens; ++x)
        for (int h = 0; h < p.heads; ++h) {
          const int hk = h / (p.heads / p.heads_kv);
          std::vector<double> logit(window, -INFINITY);
          double mx = -INFINITY;
          for (int s = 0; s < window; ++s) {
            Neighbor n = neighbor(p.grid, x, s);
            if (!n.valid) continue;
            double d = 0;
            for (int e = 0; e < p.dim; ++e)
              d += double(float(q[((b * tokens + x) * p.heads + h) * p.dim + e])) * double(float(k[((b * tokens + n.token) * p.heads_kv + hk) * p.dim + e]));
            d *= p.scale;
            if (use_rpb) d += float(rpb[h * rpbw + n.bias_offset]);
            logit[s] = d;
            mx = std::max(mx, d);
          }
          double sum = 0;
          for (int s = 0; s < window; ++s) sum += std::exp(logit[s] - mx);
          const int64_t row = (b * tokens + x) * p.heads + h;
          lse_err = std::max(lse_err, std::abs(mx + std::log(sum) - lse[row]));
          for (int e = 0; e < p.dim_v; ++e) {
            double o = 0;
            for (int s = 0; s < window; ++s) {
              Neighbor n = neighbor(p.grid, x, s);
              if (n.valid) o += std::exp(logit[s] - mx) / sum * float(v[((b * tokens + n.token) * p.heads_kv + hk) * p.dim_v + e]);
            }
            const double got = float(out[row * p.dim_v + e]);
            err2 += (got - o) * (got - o);
            ref2 += o * o;
          }
        }
    const double rel = std::sqrt(err2 / ref2);
    if (!(rel < 2e-3) || !(lse_err < 1e-3)) {
      ++failures;
      std::printf("case %d rank %d rel %.3g lse %.3g\n", c, p.grid.rank, rel, lse_err);
    }
  }
  std::printf("%d failures\n", failures);
  return failures != 0;
}
