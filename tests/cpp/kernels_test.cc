// The GEMM-based PN, NN and IN kernels (gemm/) against the naive kernels (naive_kernels.cuh), both
// run from their CUDA source by the host emulation, on small problems of every parameter class,
// in float16 (SM80 m16n8k16 atom) and float32 (TF32 atom, split into three products).
//   kernels_test [fibers|threads]       all checks on the fiber backend (default); on the thread
//                                       backend (for the sanitizers, ~40x the CPU time) the 2-D
//                                       problem in float16 only; exit 0 = pass
//   kernels_test drop-barrier [lanes]   mutant: one __syncthreads of the GEMM kernels dropped
//                                       (reported by the smem race shadow or ThreadSanitizer,
//                                       or wrong results)
//   kernels_test wrong-layout           mutant: the emulated atom's A fragment in the wrong lanes
//                                       (must give wrong results)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "jax_natten/exec/host_grid.h"
#include "jax_natten/gemm/in.cuh"
#include "jax_natten/gemm/nn.cuh"
#include "jax_natten/gemm/pn.cuh"
#include "jax_natten/gemm/tile_scheduler.h"
#include "jax_natten/naive_kernels.cuh"
#include "jax_natten/params.h"

namespace na = jax_natten;
namespace ex = jax_natten::exec;

namespace {

// Mutant context: drops the kDrop-th __syncthreads (0-based, counted per lane).
template <int kDrop>
struct DropBarrier : ex::HostContext {
  static inline int calls[1024] = {};
  void sync_threads() const {
    if (calls[ex::t_lane]++ != kDrop) ex::HostContext::sync_threads();
  }
};

// Mutant context: each lane's A fragment read from the lane four up (rows of the tile swapped).
template <class Op>
struct LanesSwappedA : ex::AtomLayouts<Op> {
  static int a(int lane, int value) { return ex::AtomLayouts<Op>::a(lane ^ 4, value); }
};
struct WrongLayout : ex::HostContext {
  template <class Op>
  using mma_op = ex::HostMma<Op, LanesSwappedA<Op>>;
};

struct Problem {
  const char* name;
  int rank;
  int length[3], kernel[3], stride[3], dilation[3];
  bool causal[3];
  int batch, heads, heads_kv, dim;
};

na::UnfusedParams params(const Problem& c) {
  na::UnfusedParams p{};
  p.grid.rank = c.rank;
  p.tokens = 1;
  p.window = 1;
  p.rpb_window = 1;
  for (int a = 0; a < c.rank; ++a) {
    p.grid.axis[a] = {c.length[a], c.kernel[a], c.stride[a], c.dilation[a], c.causal[a]};
    p.tokens *= c.length[a];
    p.window *= c.kernel[a];
    p.rpb_window *= 2 * c.kernel[a] - 1;
  }
  p.batch = c.batch;
  p.heads = c.heads;
  p.heads_kv = c.heads_kv;
  p.dim = c.dim;
  p.rpb_batch = 1;
  p.scale = 0.5f;
  p.empty_value = -INFINITY;
  return p;
}

template <class T>
std::vector<T> random(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<T> x(n);
  for (T& v : x) v = na::from_float<T>(normal(rng));
  return x;
}

// Relative L2 error of `got` against `want`; infinite when an element is NaN or where exactly
// one of them is infinite (an empty causal slot written wrongly).
template <class A, class B>
double rel_error(const std::vector<A>& got, const std::vector<B>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = na::to_float(got[i]), w = na::to_float(want[i]);
    if (std::isnan(g) || std::isinf(g) != std::isinf(w)) return INFINITY;
    if (std::isinf(w)) continue;
    num += (g - w) * (g - w);
    den += w * w;
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

using NaiveConfig = na::naive::BlockConfig<256>;
// The built configuration, and a second one that only this test instantiates: other tile
// shapes and warp grids compile and compute the same (no 64 x 64 x 32 assumption in the kernels).
using Tile64x64x32 = na::gemm::TileConfig<64, 64, 32, 2, 2>;
using Tile64x32x16 = na::gemm::TileConfig<64, 32, 16, 4, 1>;

// The launch grid of kernel K, as the FFI handlers launch it.
template <class K>
ex::Dim3 grid(const na::UnfusedParams& p) {
  ex::Dim3 blocks;
  if (const std::string why = K::grid(p, &blocks); !why.empty()) {
    std::printf("%s: %s\n", K::kName, why.c_str());
    std::exit(2);
  }
  return blocks;
}

// Kernel K over its launch grid, with context Ctx.
template <class K, class Ctx = ex::HostContext, class... Args>
void run(ex::Lanes lanes, const na::UnfusedParams& p, const Args&... args) {
  ex::run_grid<K, Ctx>(lanes, grid<K>(p), p, args...);
}

int g_failures = 0;

// PN, NN and IN of the GEMM kernels (configuration Config, context Ctx) against the naive ones;
// returns the worst error.
template <class T, class Ctx = ex::HostContext, class Config = Tile64x64x32>
double check(const Problem& c, ex::Lanes lanes, bool report) {
  std::mt19937 rng(7);
  const na::UnfusedParams p = params(c);
  const int64_t rows = p.batch * p.tokens;
  const auto q = random<T>(rows * p.heads * p.dim, rng);
  const auto k = random<T>(rows * p.heads_kv * p.dim, rng);
  const auto rpb = random<T>(p.heads * p.rpb_window, rng);
  const auto w = random<float>(rows * p.heads * p.window, rng);
  const auto x = random<T>(rows * p.heads * p.dim, rng);
  const double tolerance = sizeof(T) == 4 ? 1e-5 : 2e-3;
  double worst = 0;
  auto record = [&](const char* op, double error) {
    worst = std::fmax(worst, error);
    if (report) {
      const bool ok = error < tolerance;
      std::printf("%-40s %-3s %-8s %dx%dx%d rel err %.2e  %s\n", c.name, op, sizeof(T) == 4 ? "float32" : "float16",
                  Config::kTileM, Config::kTileN, Config::kTileK, error, ok ? "ok" : "FAILED");
      g_failures += !ok;
    }
  };
  {
    std::vector<float> want(rows * p.heads * p.window, NAN), got(want.size(), NAN);
    run<na::naive::Pn<float, T, NaiveConfig>>(lanes, p, q.data(), k.data(), rpb.data(), want.data());
    run<na::gemm::Pn<float, T, Config>, Ctx>(lanes, p, q.data(), k.data(), rpb.data(), got.data());
    record("PN", rel_error(got, want));
  }
  {
    std::vector<T> want(rows * p.heads * p.dim, na::from_float<T>(NAN)), got(want);
    run<na::naive::Nn<float, T, NaiveConfig>>(lanes, p, w.data(), k.data(), want.data());
    run<na::gemm::Nn<float, T, Config>, Ctx>(lanes, p, w.data(), k.data(), got.data());
    record("NN", rel_error(got, want));
  }
  {
    std::vector<T> want(rows * p.heads_kv * p.dim, na::from_float<T>(NAN)), got(want);
    run<na::naive::In<float, T, NaiveConfig>>(lanes, p, w.data(), x.data(), want.data());
    run<na::gemm::In<float, T, Config>, Ctx>(lanes, p, w.data(), x.data(), got.data());
    record("IN", rel_error(got, want));
  }
  return worst;
}

// Odd sizes, even and odd kernels, stride, dilation not dividing the length, per-axis causal, GQA,
// more than one tile and column block.
const Problem kProblems[] = {
    {"1-D L=70 k=7 s=2 d=3 causal", 1, {70}, {7}, {2}, {3}, {true}, 1, 2, 1, 72},
    {"2-D 11x9 k=(4,3) s=(1,2) d=(2,1) causal=(0,1)", 2, {11, 9}, {4, 3}, {1, 2}, {2, 1}, {false, true}, 2, 4, 2, 16},
    {"3-D 5x6x7 k=(3,2,5) s=(3,1,2) d=(1,3,1)", 3, {5, 6, 7}, {3, 2, 5}, {3, 1, 2}, {1, 3, 1}, {false, false, true}, 1, 3, 3, 8},
};

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "fibers";
  const ex::Lanes lanes = (mode == "threads" || (argc > 2 && std::string(argv[2]) == "threads")) ? ex::Lanes::kThreads
                                                                                                 : ex::Lanes::kFibers;
  if (mode == "drop-barrier") {
    // The third barrier of PN's first step: between the operand gathers and the MMA.
    const double error = check<__half, DropBarrier<2>>(kProblems[1], lanes, false);
    std::printf("drop-barrier: rel err %.2e\n", error);
    return error < 2e-3 ? 0 : 1;
  }
  if (mode == "wrong-layout") {
    const double error = check<__half, WrongLayout>(kProblems[1], lanes, false);
    std::printf("wrong-layout: rel err %.2e\n", error);
    return error < 2e-3 ? 0 : 1;
  }
  if (lanes == ex::Lanes::kThreads) {
    check<__half>(kProblems[1], lanes, true);
  } else {
    for (const Problem& c : kProblems) {
      check<__half>(c, lanes, true);
      check<float>(c, lanes, true);
    }
    check<__half, ex::HostContext, Tile64x32x16>(kProblems[1], lanes, true);
    check<float, ex::HostContext, Tile64x32x16>(kProblems[1], lanes, true);
  }
  std::printf("%s\n", g_failures == 0 ? "all passed" : "FAILURES");
  return g_failures == 0 ? 0 : 1;
}
