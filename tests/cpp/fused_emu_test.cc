// The fused forward kernel through the host emulation (jax_natten/exec/), against a float64
// evaluation of neighborhood.h, over random cases of every parameter class of SPEC at small
// sizes: ranks 1-3, odd/even kernels, stride, dilation with non-divisible lengths, per-axis
// causal, GQA/MQA, head_dim != head_dim_v, RPB (stride 1, not causal). Outputs are poisoned (NaN)
// before each run; a NaN anywhere fails.
//   fused_emu_test big                        the last CTAs of a launch over tensors of more than
//                                             2^31 elements, in lazily committed (mmap'd) memory
//   fused_emu_test [cases [seed [threads]]]   cases per dtype, spread over the head-dim classes;
//                                             "threads": the thread backend (ThreadSanitizer),
//                                             else fibers. Built with -DJAX_NATTEN_FUSED_ONE_CLASS:
//                                             float16 and float32 (the two MMA paths), head-dim
//                                             class 64 only (quick builds for the sanitizer and
//                                             mutant runs).
#include <cute/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <sys/mman.h>

#include "jax_natten/exec/host_grid.h"
#include "jax_natten/fused/kernel.h"

using namespace jax_natten;
using namespace jax_natten::fused;
using Lanes = jax_natten::exec::Lanes;

namespace {

// Tile boxes of the kernel's rows (64 rows: the ones the planner picks for small problems of each
// rank): (rows), (rows / 8, 8), (rows / 16, 4, 4).
void set_tiles(FusedParams& p, int kv_rows) {
  const int inner[3][3] = {{1, 1, 1}, {8, 8, 1}, {16, 4, 4}};  // rows / extent of axis 0, extents of axes 1, 2
  const int* box = inner[p.grid.rank - 1];
  for (int a = 0; a < p.grid.rank; ++a) {
    p.q_tile[a] = a == 0 ? kQTileRows / box[0] : box[a];
    p.kv_tile[a] = a == 0 ? kv_rows / box[0] : box[a];
  }
}

FusedParams random_case(std::mt19937& rng, int head_dim_class, int kv_rows) {
  FusedParams p{};
  p.grid.rank = 1 + rng() % 3;
  int64_t tokens = 1;
  // Small grids (the emulation runs about a million emulated MMA lane-steps a second): every
  // class still shows up, with partial Q tiles, several KV tiles and non-divisible dilations.
  for (int a = 0; a < p.grid.rank; ++a) {
    AxisParams& ax = p.grid.axis[a];
    ax.dilation = 1 + rng() % (p.grid.rank == 3 ? 2 : 3);
    ax.kernel_size = 2 + rng() % (p.grid.rank == 1 ? 9 : p.grid.rank == 2 ? 4 : 2);
    ax.length = ax.kernel_size * ax.dilation + rng() % (p.grid.rank == 1 ? 90 : p.grid.rank == 2 ? 10 : 4);
    ax.stride = 1 + rng() % ax.kernel_size;
    ax.is_causal = rng() % 3 == 0;
    tokens *= ax.length;
  }
  set_tiles(p, kv_rows);
  p.batch = 1 + (rng() % 4 == 0);
  p.tokens = tokens;
  // MHA, GQA and MQA (heads_kv = 1) with up to 3 query heads per KV head.
  p.heads_kv = 1 + rng() % 2;
  p.heads = p.heads_kv * (1 + rng() % 3);
  p.dim = 8 * (1 + rng() % (head_dim_class / 8));
  p.dim_v = 8 * (1 + rng() % (head_dim_class / 8));
  p.scale = 1.f / std::sqrt(float(p.dim));
  return p;
}

bool rpb_allowed(const FusedParams& p) {
  for (int a = 0; a < p.grid.rank; ++a) {
    if (p.grid.axis[a].stride != 1 || p.grid.axis[a].is_causal) return false;
  }
  return true;
}

// SPEC's relative tolerances of O; float32 runs split TF32 (float32 accuracy), so its own.
template <class E>
float tolerance() {
  if constexpr (std::is_same_v<E, float>) return 1e-5f;
  return std::is_same_v<E, cute::half_t> ? 2e-3f : 1e-2f;
}
// Absolute tolerance of the LSE (float32 in every dtype, from scores of the input dtype).
template <class E>
double lse_tolerance() { return std::is_same_v<E, float> ? 1e-5 : 2e-2; }

// Runs one case; returns the relative error of O (inf for a NaN) and sets *lse_error.
template <class E, int kHeadDim>
double run_case(const FusedParams& shape, bool use_rpb, std::mt19937& rng, Lanes lanes, double* lse_error) {
  FusedParams p = shape;
  const int64_t tokens = p.tokens;
  int window = 1, rpb_window = 1;
  for (int a = 0; a < p.grid.rank; ++a) {
    window *= p.grid.axis[a].kernel_size;
    rpb_window *= 2 * p.grid.axis[a].kernel_size - 1;
  }
  std::normal_distribution<float> normal;
  auto random = [&](size_t n) {
    std::vector<E> x(n);
    for (auto& e : x) e = E(normal(rng));
    return x;
  };
  std::vector<E> q = random(p.batch * tokens * p.heads * p.dim), k = random(p.batch * tokens * p.heads_kv * p.dim),
                 v = random(p.batch * tokens * p.heads_kv * p.dim_v), rpb = random(p.heads * rpb_window);
  std::vector<E> out(p.batch * tokens * p.heads * p.dim_v, E(NAN));
  std::vector<float> lse(p.batch * tokens * p.heads, NAN);
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.rpb = use_rpb ? rpb.data() : nullptr;
  p.out = out.data();
  p.lse = lse.data();
  const FusedParams padded = pad_axes(p);
  exec::run_grid<ForwardKernel<ForwardConfig<E, kHeadDim>>>(lanes, launch_grid(padded), padded);

  double err2 = 0, ref2 = 0;
  *lse_error = 0;
  std::vector<double> logit(window);
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t x = 0; x < tokens; ++x) {
      for (int h = 0; h < p.heads; ++h) {
        const int hk = h / (p.heads / p.heads_kv);
        const int64_t row = (b * tokens + x) * p.heads + h;
        double max = -INFINITY;
        for (int s = 0; s < window; ++s) {
          const Neighbor n = neighbor(p.grid, x, s);
          logit[s] = -INFINITY;
          if (!n.valid) continue;
          double dot = 0;
          for (int e = 0; e < p.dim; ++e) {
            dot += double(q[row * p.dim + e]) * double(k[((b * tokens + n.token) * p.heads_kv + hk) * p.dim + e]);
          }
          logit[s] = dot * p.scale + (use_rpb ? double(rpb[h * rpb_window + n.bias_offset]) : 0.0);
          max = std::max(max, logit[s]);
        }
        double sum = 0;
        for (int s = 0; s < window; ++s) sum += std::exp(logit[s] - max);
        const double got_lse = lse[row];
        *lse_error = std::max(*lse_error, std::isnan(got_lse) ? INFINITY : std::abs(max + std::log(sum) - got_lse));
        for (int e = 0; e < p.dim_v; ++e) {
          double o = 0;
          for (int s = 0; s < window; ++s) {
            const Neighbor n = neighbor(p.grid, x, s);
            if (n.valid) o += std::exp(logit[s] - max) / sum * double(v[((b * tokens + n.token) * p.heads_kv + hk) * p.dim_v + e]);
          }
          const double got = double(out[row * p.dim_v + e]);
          err2 += std::isnan(got) ? INFINITY : (got - o) * (got - o);
          ref2 += o * o;
        }
      }
    }
  }
  return std::sqrt(err2 / ref2);
}

template <class E, int kHeadDim>
int sweep(const char* dtype, int cases, unsigned seed, Lanes lanes) {
  std::mt19937 rng(seed * 1000 + kHeadDim);
  int failures = 0;
  double worst = 0, worst_lse = 0;
  for (int c = 0; c < cases; ++c) {
    const FusedParams p = random_case(rng, kHeadDim, kv_tile_rows(kHeadDim, sizeof(E)));
    const bool use_rpb = rpb_allowed(p) && rng() % 2;
    double lse_error;
    const double error = run_case<E, kHeadDim>(p, use_rpb, rng, lanes, &lse_error);
    worst = std::max(worst, error);
    worst_lse = std::max(worst_lse, lse_error);
    if (!(error < tolerance<E>()) || !(lse_error < lse_tolerance<E>())) {
      ++failures;
      std::printf("FAILED %s d%d case %d: rank %d", dtype, kHeadDim, c, p.grid.rank);
      for (int a = 0; a < p.grid.rank; ++a) {
        const AxisParams& ax = p.grid.axis[a];
        std::printf(" [L%d k%d s%d d%d%s]", ax.length, ax.kernel_size, ax.stride, ax.dilation, ax.is_causal ? " causal" : "");
      }
      std::printf(" heads %d/%d dim %d/%d rpb %d: rel %.3g lse %.3g\n", p.heads, p.heads_kv, p.dim, p.dim_v,
                  int(use_rpb), error, lse_error);
    }
  }
  std::printf("%s head_dim class %d: %d cases, %d failed, worst relative error %.3g, worst LSE error %.3g\n", dtype,
              kHeadDim, cases, failures, worst, worst_lse);
  return failures;
}

// Tensors of more than 2^31 elements (64-bit offsets): [1, 2^21 + 45 tokens, 16 heads, 64] (4 GiB
// each in float16, 8 in float32), mapped without reserve so that only the pages written or read
// exist. Only the CTAs of the last Q tiles of the last head run; their rows are checked against
// float64.
template <class E>
int big_tensor_case(const char* dtype) {
  constexpr int kDim = 64;
  FusedParams p{};
  p.grid.rank = 1;
  p.grid.axis[0] = AxisParams{(1 << 21) + 45, 13, 1, 1, false};
  set_tiles(p, kv_tile_rows(kDim, sizeof(E)));
  p.batch = 1;
  p.tokens = p.grid.axis[0].length;
  p.heads = p.heads_kv = 16;
  p.dim = p.dim_v = kDim;
  p.scale = 0.125f;
  const size_t elements = size_t(p.tokens) * p.heads * kDim;
  if (elements <= (size_t(1) << 31)) return 1;
  auto map = [](size_t bytes) {
    void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) std::abort();
    return m;
  };
  E* q = static_cast<E*>(map(elements * sizeof(E)));
  E* k = static_cast<E*>(map(elements * sizeof(E)));
  E* v = static_cast<E*>(map(elements * sizeof(E)));
  E* out = static_cast<E*>(map(elements * sizeof(E)));
  float* lse = static_cast<float*>(map(size_t(p.tokens) * p.heads * sizeof(float)));
  // The last 256 tokens of every tensor get random values (the last Q tiles read only those).
  const int64_t first = p.tokens - 256;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (int64_t i = first * p.heads * kDim; i < int64_t(elements); ++i) {
    q[i] = E(normal(rng));
    k[i] = E(normal(rng));
    v[i] = E(normal(rng));
    out[i] = E(NAN);
  }
  p.q = q;
  p.k = k;
  p.v = v;
  p.out = out;
  p.lse = lse;
  const FusedParams padded = pad_axes(p);
  const exec::Dim3 grid = launch_grid(padded);
  const unsigned head = p.heads - 1;
  exec::run_blocks<ForwardKernel<ForwardConfig<E, kDim>>>(Lanes::kFibers, grid,
                                                          {{grid.x - 2, head, 0}, {grid.x - 1, head, 0}}, padded);
  double err2 = 0, ref2 = 0;
  const int64_t checked_from = (int64_t(grid.x) - 2) * kQTileRows;
  for (int64_t x = checked_from; x < p.tokens; ++x) {
    const int64_t row = x * p.heads + head;
    std::vector<double> logit(13);
    double max = -INFINITY, sum = 0;
    for (int s = 0; s < 13; ++s) {
      const Neighbor n = neighbor(p.grid, x, s);
      double dot = 0;
      for (int e = 0; e < kDim; ++e) dot += double(q[row * kDim + e]) * double(k[(n.token * p.heads + head) * kDim + e]);
      logit[s] = dot * p.scale;
      max = std::max(max, logit[s]);
    }
    for (int s = 0; s < 13; ++s) sum += std::exp(logit[s] - max);
    for (int e = 0; e < kDim; ++e) {
      double o = 0;
      for (int s = 0; s < 13; ++s) {
        o += std::exp(logit[s] - max) / sum * double(v[(neighbor(p.grid, x, s).token * p.heads + head) * kDim + e]);
      }
      const double got = double(out[row * kDim + e]);
      err2 += std::isnan(got) ? INFINITY : (got - o) * (got - o);
      ref2 += o * o;
    }
  }
  const double error = std::sqrt(err2 / ref2);
  std::printf("big tensor %s: %zu elements per operand, rows %lld..%lld of head %u: relative error %.3g\n", dtype,
              elements, static_cast<long long>(checked_from), static_cast<long long>(p.tokens - 1), head, error);
  return error < tolerance<E>() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows while a long sweep runs
  if (argc > 1 && std::string(argv[1]) == "big") {
    return big_tensor_case<cute::half_t>("float16") | big_tensor_case<float>("float32");
  }
  const int cases = argc > 1 ? std::atoi(argv[1]) : 20;
  const unsigned seed = argc > 2 ? std::atoi(argv[2]) : 1;
  const Lanes lanes = argc > 3 && std::string(argv[3]) == "threads" ? Lanes::kThreads : Lanes::kFibers;
  int failures = 0;
#ifdef JAX_NATTEN_FUSED_ONE_CLASS
  failures += sweep<cute::half_t, 64>("float16", cases, seed, lanes);
  failures += sweep<float, 64>("float32", cases, seed, lanes);
#else
  // Per dtype: 35% of the cases at head-dim class 32, 35% at 64, 20% at 128, the rest at 256.
  const int small = cases * 35 / 100, medium = cases / 5, large = cases - 2 * small - medium;
  failures += sweep<cute::half_t, 32>("float16", small, seed, lanes);
  failures += sweep<cute::bfloat16_t, 32>("bfloat16", small, seed, lanes);
  failures += sweep<cute::half_t, 64>("float16", small, seed, lanes);
  failures += sweep<cute::bfloat16_t, 64>("bfloat16", small, seed, lanes);
  failures += sweep<cute::half_t, 128>("float16", medium, seed, lanes);
  failures += sweep<cute::bfloat16_t, 128>("bfloat16", medium, seed, lanes);
  failures += sweep<cute::half_t, 256>("float16", large, seed, lanes);
  failures += sweep<cute::bfloat16_t, 256>("bfloat16", large, seed, lanes);
  failures += sweep<float, 32>("float32", small, seed, lanes);
  failures += sweep<float, 64>("float32", small, seed, lanes);
  failures += sweep<float, 128>("float32", medium, seed, lanes);
  failures += sweep<float, 256>("float32", large, seed, lanes);
#endif
  return failures != 0;
}
