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
//   fused_emu_test backward [cases [seed [threads]]]
//                                             the fused backward on cases without RPB,
//                                             after the forward: dQ, dK, dV against float64, with
//                                             an LSE cotangent; dK and dV poisoned, so a key that
//                                             no CTA writes fails. Cases per dtype (float16 and
//                                             bfloat16) spread over head-dim classes 32, 64 and
//                                             128 (every backward instantiation); one-class
//                                             builds: float16 at class 64 only.
//   fused_emu_test backward-deterministic [...]  the same with dQ from the Q-tile kernel
//                                             (backward_dq.h; d_query poisoned too), each case
//                                             run 3 times: dQ, dK and dV must keep their bits.
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
#include "jax_natten/fused/backward.h"
#include "jax_natten/fused/backward_dq.h"
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

// A case's shape, for a failure's line.
void print_shape(const FusedParams& p) {
  std::printf(" rank %d", p.grid.rank);
  for (int a = 0; a < p.grid.rank; ++a) {
    const AxisParams& ax = p.grid.axis[a];
    std::printf(" [L%d k%d s%d d%d%s]", ax.length, ax.kernel_size, ax.stride, ax.dilation, ax.is_causal ? " causal" : "");
  }
  std::printf(" heads %d/%d dim %d/%d", p.heads, p.heads_kv, p.dim, p.dim_v);
}

template <class E>
std::vector<E> random_values(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<E> x(n);
  for (auto& e : x) e = E(normal(rng));
  return x;
}

// Float64 softmax of query row (b, x, h) over its window (rpb: null or [heads, rpb_window]):
// probs[s] per window slot (0 where the slot has no key); returns the row's LSE.
template <class E>
double reference_probs(const FusedParams& p, const E* q, const E* k, const E* rpb, int rpb_window, int64_t b,
                       int64_t x, int h, std::vector<double>& probs) {
  const int hk = h / (p.heads / p.heads_kv);
  const int64_t row = (b * p.tokens + x) * p.heads + h;
  double max = -INFINITY;
  for (size_t s = 0; s < probs.size(); ++s) {
    const Neighbor n = neighbor(p.grid, x, s);
    probs[s] = -INFINITY;
    if (!n.valid) continue;
    double dot = 0;
    for (int e = 0; e < p.dim; ++e) {
      dot += double(q[row * p.dim + e]) * double(k[((b * p.tokens + n.token) * p.heads_kv + hk) * p.dim + e]);
    }
    probs[s] = dot * p.scale + (rpb != nullptr ? double(rpb[h * rpb_window + n.bias_offset]) : 0.0);
    max = std::max(max, probs[s]);
  }
  double sum = 0;
  for (double& e : probs) sum += (e = std::exp(e - max));
  for (double& e : probs) e /= sum;
  return max + std::log(sum);
}

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
  auto random = [&](size_t n) { return random_values<E>(n, rng); };
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
  std::vector<double> probs(window);
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t x = 0; x < tokens; ++x) {
      for (int h = 0; h < p.heads; ++h) {
        const int hk = h / (p.heads / p.heads_kv);
        const int64_t row = (b * tokens + x) * p.heads + h;
        const double want_lse = reference_probs(p, q.data(), k.data(), use_rpb ? rpb.data() : nullptr, rpb_window, b, x,
                                                h, probs);
        const double got_lse = lse[row];
        *lse_error = std::max(*lse_error, std::isnan(got_lse) ? INFINITY : std::abs(want_lse - got_lse));
        for (int e = 0; e < p.dim_v; ++e) {
          double o = 0;
          for (int s = 0; s < window; ++s) {
            const Neighbor n = neighbor(p.grid, x, s);
            if (n.valid) o += probs[s] * double(v[((b * tokens + n.token) * p.heads_kv + hk) * p.dim_v + e]);
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
      std::printf("FAILED %s d%d case %d:", dtype, kHeadDim, c);
      print_shape(p);
      std::printf(" rpb %d: rel %.3g lse %.3g\n", int(use_rpb), error, lse_error);
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

// The relative error (L2) of got against want, inf if got holds a NaN.
template <class G>
double relative_error(const std::vector<double>& want, const std::vector<G>& got) {
  double err2 = 0, ref2 = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = double(got[i]);
    err2 += std::isnan(g) ? INFINITY : (g - want[i]) * (g - want[i]);
    ref2 += want[i] * want[i];
  }
  return ref2 > 0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
}

// Runs the forward, then the backward of one case (no RPB) with loss sum(O * dO) + sum(LSE * g);
// returns the worst relative error of dQ, dK and dV against float64 (infinite if a deterministic
// run's bits change from one of its 3 runs to the next).
template <class E, int kHeadDim>
double run_backward_case(const FusedParams& shape, std::mt19937& rng, Lanes lanes, bool deterministic) {
  FusedParams p = shape;
  const int64_t tokens = p.tokens;
  int window = 1;
  for (int a = 0; a < p.grid.rank; ++a) window *= p.grid.axis[a].kernel_size;
  auto random = [&](size_t n) { return random_values<E>(n, rng); };
  const size_t rows = p.batch * tokens * p.heads, kv_rows = p.batch * tokens * p.heads_kv;
  std::vector<E> q = random(rows * p.dim), k = random(kv_rows * p.dim), v = random(kv_rows * p.dim_v),
                 d_out = random(rows * p.dim_v);
  const std::vector<float> d_lse = random_values<float>(rows, rng);
  std::vector<E> out(rows * p.dim_v, E(NAN));
  std::vector<float> lse(rows, NAN);
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.rpb = nullptr;
  p.out = out.data();
  p.lse = lse.data();
  const FusedParams padded = pad_axes(p);
  exec::run_grid<ForwardKernel<ForwardConfig<E, kHeadDim>>>(lanes, launch_grid(padded), padded);

  // delta = rowsum(dO * O) - dLSE, from the forward's own O, as the custom_vjp computes it.
  std::vector<float> delta(rows);
  for (size_t row = 0; row < rows; ++row) {
    float dot = 0;
    for (int e = 0; e < p.dim_v; ++e) dot += float(d_out[row * p.dim_v + e]) * float(out[row * p.dim_v + e]);
    delta[row] = dot - d_lse[row];
  }
  // Atomic mode adds to a zeroed dQ; the deterministic one writes every element (poisoned here).
  std::vector<float> d_query(rows * p.dim, deterministic ? NAN : 0.f);
  std::vector<E> d_key(kv_rows * p.dim, E(NAN)), d_value(kv_rows * p.dim_v, E(NAN));
  BackwardParams bp{p, d_out.data(), lse.data(), delta.data(), d_query.data(), d_key.data(), d_value.data(),
                    deterministic};
  bp.fwd = padded;
  BackwardParams kv_tiles = bp;
  if (deterministic) kv_tiles.d_query = nullptr;
  exec::run_grid<BackwardKernel<BackwardConfig<E, kHeadDim>>>(lanes, backward_launch_grid(padded), kv_tiles);
  if (deterministic) {
    exec::run_grid<BackwardDqKernel<DqConfig<E, kHeadDim>>>(lanes, launch_grid(padded), bp);
    for (int run = 1; run < 3; ++run) {
      const std::vector<float> first_dq = d_query;
      const std::vector<E> first_dk = d_key, first_dv = d_value;
      std::fill(d_query.begin(), d_query.end(), NAN);
      std::fill(d_key.begin(), d_key.end(), E(NAN));
      std::fill(d_value.begin(), d_value.end(), E(NAN));
      exec::run_grid<BackwardKernel<BackwardConfig<E, kHeadDim>>>(lanes, backward_launch_grid(padded), kv_tiles);
      exec::run_grid<BackwardDqKernel<DqConfig<E, kHeadDim>>>(lanes, launch_grid(padded), bp);
      if (std::memcmp(first_dq.data(), d_query.data(), sizeof(float) * d_query.size()) != 0 ||
          std::memcmp(first_dk.data(), d_key.data(), sizeof(E) * d_key.size()) != 0 ||
          std::memcmp(first_dv.data(), d_value.data(), sizeof(E) * d_value.size()) != 0) {
        std::printf("deterministic run %d changed the bits of dQ, dK or dV\n", run);
        return INFINITY;
      }
    }
  }

  std::vector<double> want_dq(rows * p.dim, 0.0), want_dk(kv_rows * p.dim, 0.0), want_dv(kv_rows * p.dim_v, 0.0);
  std::vector<double> prob(window), d_prob(window);
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t x = 0; x < tokens; ++x) {
      for (int h = 0; h < p.heads; ++h) {
        const int hk = h / (p.heads / p.heads_kv);
        const int64_t row = (b * tokens + x) * p.heads + h;
        auto kv_row = [&](const Neighbor& n) { return (b * tokens + n.token) * p.heads_kv + hk; };
        reference_probs(p, q.data(), k.data(), static_cast<const E*>(nullptr), 1, b, x, h, prob);
        double row_delta = -d_lse[row];
        for (int s = 0; s < window; ++s) {
          const Neighbor n = neighbor(p.grid, x, s);
          d_prob[s] = 0;
          if (!n.valid) continue;
          for (int e = 0; e < p.dim_v; ++e) d_prob[s] += double(d_out[row * p.dim_v + e]) * double(v[kv_row(n) * p.dim_v + e]);
          row_delta += prob[s] * d_prob[s];
        }
        for (int s = 0; s < window; ++s) {
          const Neighbor n = neighbor(p.grid, x, s);
          if (!n.valid) continue;
          const double d_score = prob[s] * (d_prob[s] - row_delta) * p.scale;
          for (int e = 0; e < p.dim; ++e) {
            want_dq[row * p.dim + e] += d_score * double(k[kv_row(n) * p.dim + e]);
            want_dk[kv_row(n) * p.dim + e] += d_score * double(q[row * p.dim + e]);
          }
          for (int e = 0; e < p.dim_v; ++e) want_dv[kv_row(n) * p.dim_v + e] += prob[s] * double(d_out[row * p.dim_v + e]);
        }
      }
    }
  }
  return std::max({relative_error(want_dq, d_query), relative_error(want_dk, d_key), relative_error(want_dv, d_value)});
}

// Backward cases of element type E at head-dim class kHeadDim, against twice the forward's
// tolerance (dS and P are rounded to E before their GEMMs).
template <class E, int kHeadDim>
int backward_sweep(const char* name, int cases, unsigned seed, Lanes lanes, bool deterministic) {
  std::mt19937 rng(seed * 1000 + 7);
  int failures = 0;
  double worst = 0;
  for (int c = 0; c < cases; ++c) {
    const FusedParams p = random_case(rng, kHeadDim, kv_tile_rows(kHeadDim, sizeof(E)));
    const double error = run_backward_case<E, kHeadDim>(p, rng, lanes, deterministic);
    worst = std::max(worst, error);
    if (!(error < 2 * tolerance<E>())) {
      ++failures;
      std::printf("FAILED backward%s %s case %d:", deterministic ? " (deterministic)" : "", name, c);
      print_shape(p);
      std::printf(": rel %.3g\n", error);
    }
  }
  std::printf("backward%s %s head_dim class %d: %d cases, %d failed, worst relative error %.3g\n",
              deterministic ? " (deterministic)" : "", name, kHeadDim, cases, failures, worst);
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows while a long sweep runs
  if (argc > 1 && std::string(argv[1]) == "big") {
    return big_tensor_case<cute::half_t>("float16") | big_tensor_case<float>("float32");
  }
  const bool deterministic = argc > 1 && std::string(argv[1]) == "backward-deterministic";
  const bool backward = deterministic || (argc > 1 && std::string(argv[1]) == "backward");
  if (backward) {
    --argc;
    ++argv;
  }
  const int cases = argc > 1 ? std::atoi(argv[1]) : 20;
  const unsigned seed = argc > 2 ? std::atoi(argv[2]) : 1;
  const Lanes lanes = argc > 3 && std::string(argv[3]) == "threads" ? Lanes::kThreads : Lanes::kFibers;
  int failures = 0;
#ifdef JAX_NATTEN_FUSED_ONE_CLASS
  if (backward) return backward_sweep<cute::half_t, 64>("float16", cases, seed, lanes, deterministic) != 0;
  failures += sweep<cute::half_t, 64>("float16", cases, seed, lanes);
  failures += sweep<float, 64>("float32", cases, seed, lanes);
#else
  if (backward) {
    // Per dtype: a third of the cases at each head-dim class.
    const int third = cases / 3;
    failures += backward_sweep<cute::half_t, 32>("float16", third, seed, lanes, deterministic);
    failures += backward_sweep<cute::bfloat16_t, 32>("bfloat16", third, seed, lanes, deterministic);
    failures += backward_sweep<cute::half_t, 64>("float16", third, seed, lanes, deterministic);
    failures += backward_sweep<cute::bfloat16_t, 64>("bfloat16", third, seed, lanes, deterministic);
    failures += backward_sweep<cute::half_t, 128>("float16", cases - 2 * third, seed, lanes, deterministic);
    failures += backward_sweep<cute::bfloat16_t, 128>("bfloat16", cases - 2 * third, seed, lanes, deterministic);
    return failures != 0;
  }
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
