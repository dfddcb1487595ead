// Tests of the host emulation (cuda/include/jax_natten/exec/): the emulated SM80 MMA atoms against
// a float64 product, the emulated ldmatrix atoms against PTX's fragment rule (and a wrong
// fragment layout caught), warp shuffles, cp.async deferral (a missing wait reads poisoned
// memory), the fiber and thread backends (bitwise identical), and the fiber backend's failure
// reports.
//   exec_test            all checks, exit status 0 when all pass
//   exec_test threads    the same on the thread backend only (for ThreadSanitizer/ASan builds)
//   exec_test deadlock|diverge|returned   a broken CTA: must abort with a message
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <cute/tensor.hpp>

#include "jax_natten/exec/host_grid.h"
#include "jax_natten/exec/host_ldsm.h"
#include "jax_natten/exec/host_mma.h"

namespace ex = jax_natten::exec;
using namespace cute;

namespace {

int g_failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%-72s %s\n", what.c_str(), ok ? "ok" : "FAILED");
  if (!ok) ++g_failures;
}

// C (32 x 16, float) = A (32 x kK) * B (16 x kK)^T on a 2 x 2 warp grid of the atom Op, operands
// staged global -> shared with cp.async (16-byte copies, one commit group per operand).
// kWaitGroups: how many groups the kernel waits for (2 = correct; fewer: a missing wait).
template <class Op, class E, int kWaitGroups = 2>
struct MmaProbe {
  static constexpr int kThreads = 128;
  static constexpr int kM = 32, kN = 16;
  static constexpr int kK = 2 * size<2>(typename MMA_Traits<Op>::Shape_MNK{});
  struct Shared {
    alignas(16) E a[kM * kK];
    alignas(16) E b[kN * kK];
  };

  template <class Ctx>
  static void run(const Ctx& ctx, Shared& smem, const E* a, const E* b, float* c) {
    constexpr int kVector = 16 / sizeof(E);
    const int tid = ctx.thread_index();
    for (int i = tid * kVector; i < kM * kK; i += kThreads * kVector) ctx.cp_async_16(smem.a + i, a + i);
    ctx.cp_async_commit();
    for (int i = tid * kVector; i < kN * kK; i += kThreads * kVector) ctx.cp_async_16(smem.b + i, b + i);
    ctx.cp_async_commit();
    if constexpr (kWaitGroups == 2) ctx.template cp_async_wait<0>();
    if constexpr (kWaitGroups == 1) ctx.template cp_async_wait<1>();
    ctx.sync_threads();
    auto mma = make_tiled_mma(MMA_Atom<typename Ctx::template mma_op<Op>>{}, Layout<Shape<_2, _2, _1>>{});
    auto sA = make_tensor(make_smem_ptr(smem.a), make_layout(make_shape(Int<kM>{}, Int<kK>{}), LayoutRight{}));
    auto sB = make_tensor(make_smem_ptr(smem.b), make_layout(make_shape(Int<kN>{}, Int<kK>{}), LayoutRight{}));
    auto thread = mma.get_thread_slice(tid);
    auto acc = partition_fragment_C(mma, Shape<Int<kM>, Int<kN>>{});
    clear(acc);
    auto tA = thread.partition_A(sA);
    auto tB = thread.partition_B(sB);
    auto rA = make_fragment_like(tA);
    auto rB = make_fragment_like(tB);
    copy(tA, rA);
    copy(tB, rB);
    gemm(mma, acc, rA, rB, acc);
    auto coords = thread.partition_C(make_identity_tensor(Shape<Int<kM>, Int<kN>>{}));
    for (int i = 0; i < size(acc); ++i) c[get<0>(coords(i)) * kN + get<1>(coords(i))] = acc(i);
  }
};

template <class Probe, class E>
std::vector<float> run_probe(ex::Lanes lanes, const std::vector<E>& a, const std::vector<E>& b) {
  std::vector<float> c(Probe::kM * Probe::kN, NAN);
  ex::run_grid<Probe>(lanes, ex::Dim3{}, a.data(), b.data(), c.data());
  return c;
}

template <class Op, class E>
void test_mma(const char* name, bool fibers, uint32_t seed) {
  using Probe = MmaProbe<Op, E>;
  constexpr int kM = Probe::kM, kN = Probe::kN, kK = Probe::kK;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<E> a(kM * kK), b(kN * kK);
  for (E& x : a) x = E(normal(rng));
  for (E& x : b) x = E(normal(rng));
  double err = 0;
  auto threads = run_probe<Probe>(ex::Lanes::kThreads, a, b);
  for (int m = 0; m < kM; ++m) {
    for (int n = 0; n < kN; ++n) {
      double want = 0;
      for (int k = 0; k < kK; ++k) want += double(float(a[m * kK + k])) * double(float(b[n * kK + k]));
      err = std::fmax(err, std::fabs(want - threads[m * kN + n]));  // NaN (unwritten) fails below
      if (std::isnan(threads[m * kN + n])) err = INFINITY;
    }
  }
  check(err < 1e-4, std::string(name) + ": emulated atom vs float64 product, max err " + std::to_string(err));
  if (!fibers) return;
  auto fiber = run_probe<Probe>(ex::Lanes::kFibers, a, b);
  check(std::memcmp(fiber.data(), threads.data(), fiber.size() * 4) == 0, std::string(name) + ": fibers == threads bitwise");
  // A missing cp.async wait: the second operand never lands, so C reads the poisoned smem.
  auto missing = run_probe<MmaProbe<Op, E, 1>>(ex::Lanes::kFibers, a, b);
  bool poisoned = false;
  for (float x : missing) poisoned = poisoned || std::isnan(x);
  check(poisoned, std::string(name) + ": a missing cp.async wait reads poisoned smem");
}

// One warp runs the ldmatrix atom Ldsm (the emulation of Op) over four 8x8 matrices of distinct
// 16-bit values in shared memory. As PTX assigns the row addresses, lane l < 8 * kMatrices points
// to row l % 8 of matrix l / 8; the other lanes point to a row the instruction must ignore. Each
// lane stores the registers it receives to out[4 * lane + register].
template <class Op, class Ldsm>
struct LdsmProbe {
  static constexpr int kThreads = 32;
  static constexpr int kMatrices = std::extent_v<typename Op::DRegisters>;
  struct Shared {
    alignas(16) uint16_t m[4][8][8];
  };
  template <class Ctx>
  static void run(const Ctx& ctx, Shared& smem, const uint16_t* in, uint32_t* out) {
    const int lane = ctx.thread_index();
    for (int i = lane; i < 4 * 64; i += kThreads) (&smem.m[0][0][0])[i] = in[i];
    ctx.sync_threads();
    const uint16_t* row = lane < 8 * kMatrices ? smem.m[lane / 8][lane % 8] : smem.m[3][7 - lane % 8];
    uint32_t regs[4] = {};
    const auto& src = *reinterpret_cast<const cute::uint128_t*>(row);
    if constexpr (kMatrices == 1) Ldsm::copy(src, regs[0]);
    if constexpr (kMatrices == 2) Ldsm::copy(src, regs[0], regs[1]);
    if constexpr (kMatrices == 4) Ldsm::copy(src, regs[0], regs[1], regs[2], regs[3]);
    for (int r = 0; r < 4; ++r) out[4 * lane + r] = regs[r];
  }
};

// PTX's rule for ldmatrix .m8n8 .b16 (the "Matrix fragment" figures): register r of lane t holds
// two elements of matrix r, row t / 4 and columns 2 (t % 4) and 2 (t % 4) + 1 (the first in the
// low half); with .trans the same of the transposed matrix.
template <class Op, class Ldsm>
bool ldsm_matches_ptx(ex::Lanes lanes, bool trans) {
  using Probe = LdsmProbe<Op, Ldsm>;
  std::vector<uint16_t> in(4 * 64);
  for (int i = 0; i < 4 * 64; ++i) in[i] = uint16_t(0x100 + 37 * i);  // distinct, no 0
  std::vector<uint32_t> out(4 * 32, 0);
  ex::run_grid<Probe>(lanes, ex::Dim3{}, in.data(), out.data());
  auto element = [&](int matrix, int row, int col) -> uint32_t {
    return trans ? in[matrix * 64 + col * 8 + row] : in[matrix * 64 + row * 8 + col];
  };
  bool ok = true;
  for (int t = 0; t < 32; ++t) {
    for (int r = 0; r < 4; ++r) {
      const uint32_t want = r < Probe::kMatrices ? element(r, t / 4, 2 * (t % 4)) | element(r, t / 4, 2 * (t % 4) + 1) << 16 : 0;
      ok = ok && out[4 * t + r] == want;
    }
  }
  return ok;
}

// A wrong fragment layout: each lane receives its neighbour's registers.
template <class Op>
struct NeighbourLdsmLayouts {
  static int src(int lane, int bit) { return ex::LdsmLayouts<Op>::src(lane, bit); }
  static int dst(int lane, int bit) { return ex::LdsmLayouts<Op>::dst((lane + 1) % 32, bit); }
};

template <class Op>
void test_ldsm(const char* name, bool trans, bool fibers) {
  using Emulated = ex::HostContext::ldsm_op<Op>;
  for (ex::Lanes lanes : {ex::Lanes::kThreads, ex::Lanes::kFibers}) {
    if (lanes == ex::Lanes::kFibers && !fibers) continue;
    const std::string backend = lanes == ex::Lanes::kFibers ? " (fibers)" : " (threads)";
    check(ldsm_matches_ptx<Op, Emulated>(lanes, trans), std::string(name) + ": emulated ldmatrix == PTX's fragments" + backend);
  }
  check(!ldsm_matches_ptx<Op, ex::HostLdsm<Op, NeighbourLdsmLayouts<Op>>>(ex::Lanes::kThreads, trans),
        std::string(name) + ": a wrong fragment layout is caught");
}

// Every lane ends with the sum over its warp of (lane + 1), by an xor-shuffle butterfly.
// kSteps < 5 drops part of the cross-lane reduction.
template <int kSteps>
struct ShuffleProbe {
  static constexpr int kThreads = 64;
  struct Shared {};
  template <class Ctx>
  static void run(const Ctx& ctx, Shared&, float* out) {
    float x = float(ctx.thread_index() % 32 + 1);
    for (int s = 0; s < kSteps; ++s) x += ctx.shfl_xor(x, 1 << s);
    out[ctx.thread_index()] = x;
  }
};

template <int kSteps>
bool shuffle_sums_right(ex::Lanes lanes) {
  std::vector<float> out(64, NAN);
  ex::run_grid<ShuffleProbe<kSteps>>(lanes, ex::Dim3{}, out.data());
  bool ok = true;
  for (float x : out) ok = ok && x == 528.f;  // 1 + ... + 32
  return ok;
}

// Block and grid indices as the kernel sees them, and run_blocks running only chosen CTAs.
struct IndexProbe {
  static constexpr int kThreads = 32;
  struct Shared {};
  template <class Ctx>
  static void run(const Ctx& ctx, Shared&, int* out) {
    const ex::Dim3 b = ctx.block_index(), g = ctx.grid_size();
    if (ctx.thread_index() == 0) out[(b.z * g.y + b.y) * g.x + b.x] = int(b.x + 10 * b.y + 100 * b.z);
    if (ctx.block_threads() != kThreads) out[0] = -2;
  }
};

// Broken CTAs for the fiber backend's reports.
struct BrokenProbe {
  static constexpr int kThreads = 64;
  struct Shared {};
  template <class Ctx>
  static void run(const Ctx& ctx, Shared&, int mode) {
    const int t = ctx.thread_index();
    if (mode == 0 && t == 5) return;                     // returned while others wait
    if (mode == 1 && t % 32 < 16) ctx.shfl_xor(1.f, 1);  // deadlock: half a warp at a shuffle,
    if (mode == 2 && t < 16) ctx.shfl_xor(1.f, 1);       // the rest at the barrier; or
    if (mode == 2 && t >= 16 && t < 32) ex::t_cta->sync_warp(0, "another warp op");  // divergence
    ctx.sync_threads();
  }
};

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "all";
  if (mode == "returned" || mode == "deadlock" || mode == "diverge") {
    ex::run_grid<BrokenProbe>(ex::Lanes::kFibers, ex::Dim3{}, mode == "returned" ? 0 : mode == "deadlock" ? 1 : 2);
    std::printf("broken CTA '%s' ran to the end\n", mode.c_str());
    return 0;
  }
  const bool fibers = mode != "threads";
  test_mma<SM80_16x8x16_F32F16F16F32_TN, half_t>("float16 m16n8k16", fibers, 1);
  test_mma<SM80_16x8x16_F32BF16BF16F32_TN, bfloat16_t>("bfloat16 m16n8k16", fibers, 2);
  test_mma<SM80_16x8x8_F32TF32TF32F32_TN, tfloat32_t>("tf32 m16n8k8", fibers, 3);
  test_ldsm<SM75_U32x1_LDSM_N>("ldmatrix.x1", false, fibers);
  test_ldsm<SM75_U32x2_LDSM_N>("ldmatrix.x2", false, fibers);
  test_ldsm<SM75_U32x4_LDSM_N>("ldmatrix.x4", false, fibers);
  test_ldsm<SM75_U16x2_LDSM_T>("ldmatrix.x1.trans", true, fibers);
  test_ldsm<SM75_U16x4_LDSM_T>("ldmatrix.x2.trans", true, fibers);
  test_ldsm<SM75_U16x8_LDSM_T>("ldmatrix.x4.trans", true, fibers);
  for (ex::Lanes lanes : {ex::Lanes::kThreads, ex::Lanes::kFibers}) {
    if (lanes == ex::Lanes::kFibers && !fibers) continue;
    const char* name = lanes == ex::Lanes::kFibers ? "fibers" : "threads";
    check(shuffle_sums_right<5>(lanes), std::string("shfl_xor warp reduction (") + name + ")");
    check(!shuffle_sums_right<4>(lanes), std::string("a dropped shuffle step gives a wrong sum (") + name + ")");
    std::vector<int> out(2 * 3 * 2, -1);
    ex::run_grid<IndexProbe>(lanes, ex::Dim3{2, 3, 2}, out.data());
    bool ok = true;
    for (int z = 0; z < 2; ++z)
      for (int y = 0; y < 3; ++y)
        for (int x = 0; x < 2; ++x) ok = ok && out[(z * 3 + y) * 2 + x] == x + 10 * y + 100 * z;
    check(ok, std::string("block_index / grid_size / block_threads (") + name + ")");
    std::vector<int> some(2 * 3 * 2, -1);
    ex::run_blocks<IndexProbe>(lanes, ex::Dim3{2, 3, 2}, {ex::Dim3{1, 2, 1}}, some.data());
    int written = 0;
    for (int v : some) written += v != -1;
    check(written == 1 && some[(1 * 3 + 2) * 2 + 1] == 121, std::string("run_blocks runs only the chosen CTA (") + name + ")");
  }
  std::printf("%s\n", g_failures == 0 ? "all passed" : "FAILURES");
  return g_failures == 0 ? 0 : 1;
}
