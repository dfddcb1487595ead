// The fused backward's dQ in deterministic mode, for one CTA: one Q tile of one batch and head
// (the forward's tiles, scheduler and masks), over the same KV tiles as the forward, in the same
// order:
//   S = Q K^T, P = exp(scale S (+ bias) - LSE) (0 outside the window), dP = dO V^T,
//   dS = P (dP - delta), dQ += dS K   (dS straight from dP's registers, as P is in the forward),
// then dQ * scale written once, without atomics: the same bits run after run. The KV-parallel
// kernel (backward.h) computes dK and dV; in this mode it skips its dQ, which it would otherwise
// add by atomics in an order that varies from run to run.
#pragma once

#include <cute/tensor.hpp>

#include <cmath>
#include <cstdint>

#include "jax_natten/exec/context.h"
#include "jax_natten/fused/kernel.h"
#include "jax_natten/fused/mainloop.h"
#include "jax_natten/fused/mask.h"
#include "jax_natten/fused/params.h"
#include "jax_natten/fused/scheduler.h"
#include "jax_natten/fused/softmax.h"

namespace jax_natten::fused {

// The forward's tiles and warps, with the dO tile beside the Q tile.
template <class Elem, int kHeadDim>
struct DqConfig : ForwardConfig<Elem, kHeadDim> {
  using Base = ForwardConfig<Elem, kHeadDim>;
  static constexpr int BQ = Base::BQ, BK = Base::BK, D = kHeadDim, kStages = Base::kStages;
  struct Shared {
    alignas(128) Elem q[BQ * D];
    alignas(128) Elem d_out[BQ * D];
    alignas(128) Elem k[kStages][BK * D];
    alignas(128) Elem v[kStages][BK * D];
    KeyTable<BK> keys;
  };
  static_assert(sizeof(Elem) == 2, "the backward runs the 16-bit atom");
};

template <class Cfg, class Ctx>
JAX_NATTEN_CTA void fused_backward_dq_cta(const Ctx& ctx, const BackwardParams& bp, int64_t q_tile_index, int head,
                                          int64_t batch, typename Cfg::Shared& smem) {
  using namespace cute;
  using Elem = typename Cfg::Elem;
  constexpr int D = Cfg::kHeadDim, BQ = Cfg::BQ, BK = Cfg::BK;
  const FusedParams& p = bp.fwd;

  CtaTile t;
  if (!make_cta_tile(p, q_tile_index, &t)) return;
  const int kv_head = head / (p.heads / p.heads_kv);
  const int64_t q_row_base = batch * p.tokens * p.heads + head;
  const Elem* q = static_cast<const Elem*>(p.q) + q_row_base * p.dim;
  const Elem* d_out = static_cast<const Elem*>(bp.d_out) + q_row_base * p.dim_v;
  const Elem* k = static_cast<const Elem*>(p.k) + (batch * p.tokens * p.heads_kv + kv_head) * p.dim;
  const Elem* v = static_cast<const Elem*>(p.v) + (batch * p.tokens * p.heads_kv + kv_head) * p.dim_v;

  const int thread = ctx.thread_index();
  if (thread < BK) set_key(p, t, thread, smem.keys);
  ctx.sync_threads();  // the key table is read by every thread's gathers and masks

  using SmemQ = typename Cfg::SmemQ;
  using SmemKV = typename Cfg::SmemKV;
  auto q_token = [&](int row) { return q_row_token(p, t, row); };
  auto load_kv = [&](int j) {
    gather_kv_tile<Cfg>(ctx, p, t, smem.keys, j, k, v, smem.k[j % Cfg::kStages], smem.v[j % Cfg::kStages]);
  };
  gather_rows<Cfg, BQ>(ctx, q_token, [&](int row, int col, int64_t token) {
    copy_chunk<Cfg>(ctx, smem.q, SmemQ{}, q, int64_t(p.heads) * p.dim, p.dim, row, col, token);
    copy_chunk<Cfg>(ctx, smem.d_out, SmemQ{}, d_out, int64_t(p.heads) * p.dim_v, p.dim_v, row, col, token);
  });
  if (t.kv_tiles > 0) load_kv(0);
  ctx.cp_async_commit();

  typename Cfg::template TiledMma<Ctx> mma;
  auto thr = mma.get_slice(thread);
  auto rows_a = make_tiled_copy_A(typename Cfg::template LoadRows<Ctx>{}, mma);
  auto rows_b = make_tiled_copy_B(typename Cfg::template LoadRows<Ctx>{}, mma);
  auto cols_b = make_tiled_copy_B(typename Cfg::template LoadColumns<Ctx>{}, mma);
  auto rows_a_thr = rows_a.get_slice(thread);
  auto rows_b_thr = rows_b.get_slice(thread);
  auto cols_b_thr = cols_b.get_slice(thread);

  Tensor sQ = make_tensor(make_smem_ptr(smem.q), SmemQ{});
  Tensor sdO = make_tensor(make_smem_ptr(smem.d_out), SmemQ{});
  Tensor q_src = rows_a_thr.partition_S(sQ);
  Tensor q_regs = make_tensor<Elem>(thr.partition_fragment_A(sQ).layout());
  Tensor q_dst = rows_a_thr.retile_D(q_regs);
  Tensor do_src = rows_a_thr.partition_S(sdO);
  Tensor do_regs = make_tensor<Elem>(thr.partition_fragment_A(sdO).layout());
  Tensor do_dst = rows_a_thr.retile_D(do_regs);
  Tensor sK0 = make_tensor(make_smem_ptr(smem.k[0]), SmemKV{});
  Tensor k_regs = make_tensor<Elem>(thr.partition_fragment_B(sK0).layout());
  Tensor k_dst = rows_b_thr.retile_D(k_regs);
  Tensor v_regs = make_tensor<Elem>(thr.partition_fragment_B(sK0).layout());
  Tensor v_dst = rows_b_thr.retile_D(v_regs);
  // K^T (head dim, key): the B operand of dQ += dS K, read like the forward's V^T.
  Tensor sKt0 = make_tensor(make_smem_ptr(smem.k[0]), typename Cfg::SmemVt{});
  Tensor kt_regs = make_tensor<Elem>(thr.partition_fragment_B(sKt0).layout());
  Tensor kt_dst = cols_b_thr.retile_D(kt_regs);

  Tensor acc_dq = partition_fragment_C(mma, Shape<Int<BQ>, Int<D>>{});
  clear(acc_dq);
  Tensor dq_rc = make_tensor(acc_dq.data(), rowcol(acc_dq.layout()));
  Tensor acc_s = partition_fragment_C(mma, Shape<Int<BQ>, Int<BK>>{});
  Tensor acc_dp = partition_fragment_C(mma, Shape<Int<BQ>, Int<BK>>{});
  Tensor s_rc = make_tensor(acc_s.data(), rowcol(acc_s.layout()));
  Tensor dp_rc = make_tensor(acc_dp.data(), rowcol(acc_dp.layout()));
  Tensor s_coords = thr.partition_C(make_identity_tensor(Shape<Int<BQ>, Int<BK>>{}));
  Tensor s_coords_rc = make_tensor(s_coords.data(), rowcol(s_coords.layout()));
  Tensor q_coords = thr.partition_C(make_identity_tensor(Shape<Int<BQ>, Int<D>>{}));
  Tensor q_coords_rc = make_tensor(q_coords.data(), rowcol(q_coords.layout()));

  // This thread's rows: their windows, tokens, LSE (log2) and delta, in registers for the loop.
  constexpr int kRows = decltype(size<0>(s_rc))::value;
  RowWindow row_windows[kRows];
  int64_t row_tokens[kRows];
  float lse_log2[kRows], delta[kRows];
  CUTE_UNROLL
  for (int r = 0; r < kRows; ++r) {
    const int row = get<0>(s_coords_rc(r, 0));
    row_windows[r] = row_window(p, t, row);
    row_tokens[r] = q_token(row);
    const int64_t flat = (batch * p.tokens + row_tokens[r]) * p.heads + head;
    // Rows past the group's end: P = exp2(s - inf) = 0 also on the unmasked path.
    lse_log2[r] = row_tokens[r] >= 0 ? bp.lse[flat] * kLog2e : INFINITY;
    delta[r] = row_tokens[r] >= 0 ? bp.delta[flat] : 0.f;
  }
  const float scale_log2 = p.scale * kLog2e;
  const Elem* rpb = static_cast<const Elem*>(p.rpb);
  int rpb_window = 1;
  CUTE_UNROLL
  for (int a = 0; a < kMaxRank; ++a) rpb_window *= 2 * p.grid.axis[a].kernel_size - 1;

  for (int j = 0; j < t.kv_tiles; ++j) {
    if (j + 1 < t.kv_tiles) load_kv(j + 1);
    ctx.cp_async_commit();
    ctx.template cp_async_wait<1>();  // Q, dO and KV tile j have landed (this thread's copies)
    ctx.sync_threads();               // ... and every other thread's

    const int stage = j % Cfg::kStages;
    Tensor sK = make_tensor(make_smem_ptr(smem.k[stage]), SmemKV{});
    Tensor sV = make_tensor(make_smem_ptr(smem.v[stage]), SmemKV{});
    Tensor sKt = make_tensor(make_smem_ptr(smem.k[stage]), typename Cfg::SmemVt{});
    Tensor k_src = rows_b_thr.partition_S(sK);
    Tensor v_src = rows_b_thr.partition_S(sV);
    Tensor kt_src = cols_b_thr.partition_S(sKt);

    clear(acc_s);
    pipelined_gemm(mma, q_regs, k_regs, acc_s, [&](int kb) {
      copy(rows_a, q_src(_, _, kb), q_dst(_, _, kb));
      copy(rows_b, k_src(_, _, kb), k_dst(_, _, kb));
    });
    int origin[kMaxRank];
    kv_tile_origin(p, t, j, origin);
    const bool unmasked = rpb == nullptr && kv_tile_unmasked(p, t, origin);
    CUTE_UNROLL
    for (int c = 0; c < size<1>(s_rc); ++c) {
      int key[kMaxRank];
      key_coords(smem.keys.offsets[get<1>(s_coords_rc(0, c))], origin, key);
      CUTE_UNROLL
      for (int r = 0; r < kRows; ++r) {
        float prob = 0.f;
        if (unmasked) {
          prob = exp2f(s_rc(r, c) * scale_log2 - lse_log2[r]);
        } else if (in_window(row_windows[r], key)) {
          float x = s_rc(r, c) * scale_log2;
          if (rpb != nullptr) x += float(rpb[head * rpb_window + bias_offset(p, row_windows[r], key)]) * kLog2e;
          prob = exp2f(x - lse_log2[r]);
        }
        s_rc(r, c) = prob;
      }
    }

    clear(acc_dp);
    pipelined_gemm(mma, do_regs, v_regs, acc_dp, [&](int kb) {
      copy(rows_a, do_src(_, _, kb), do_dst(_, _, kb));
      copy(rows_b, v_src(_, _, kb), v_dst(_, _, kb));
    });
    // dS in the input dtype, in the registers of dP, viewed as the A operand of dS K.
    Tensor ds_elem = make_tensor<Elem>(acc_dp.layout());
    Tensor ds_rc = make_tensor(ds_elem.data(), rowcol(ds_elem.layout()));
    CUTE_UNROLL
    for (int c = 0; c < size<1>(dp_rc); ++c) {
      CUTE_UNROLL
      for (int r = 0; r < kRows; ++r) ds_rc(r, c) = Elem(s_rc(r, c) * (dp_rc(r, c) - delta[r]));
    }
    Tensor ds_a = make_tensor(ds_elem.data(), accumulator_as_a<Cfg::kAtomK>(ds_elem.layout()));
    pipelined_gemm(mma, ds_a, kt_regs, acc_dq, [&](int kb) { copy(cols_b, kt_src(_, _, kb), kt_dst(_, _, kb)); });
    ctx.sync_threads();  // everyone is done with this stage before tile j + 2 is loaded into it
  }

  CUTE_UNROLL
  for (int r = 0; r < kRows; ++r) {
    if (row_tokens[r] < 0) continue;
    float* d_query = bp.d_query + ((batch * p.tokens + row_tokens[r]) * p.heads + head) * p.dim;
    CUTE_UNROLL
    for (int c = 0; c < size<1>(q_coords_rc); ++c) {
      const int d = get<1>(q_coords_rc(r, c));
      if (d < p.dim) d_query[d] = dq_rc(r, c) * p.scale;
    }
  }
}

// The deterministic dQ as a CTA-level kernel: block (x, y, z) is Q tile x of head y for batches
// z, z + grid.z, ... (the forward's grid, launch_grid). The params' fwd must have been through pad_axes.
template <class Cfg>
struct BackwardDqKernel {
  using Config = Cfg;
  using Shared = typename Cfg::Shared;
  static constexpr int kThreads = Cfg::kThreads;

  template <class Ctx>
  static JAX_NATTEN_CTA void run(const Ctx& ctx, Shared& smem, const BackwardParams& p) {
    const exec::Dim3 block = ctx.block_index(), grid = ctx.grid_size();
    for (int64_t batch = block.z; batch < p.fwd.batch; batch += grid.z) {
      fused_backward_dq_cta<Cfg>(ctx, p, block.x, static_cast<int>(block.y), batch, smem);
      if (batch + grid.z < p.fwd.batch) ctx.sync_threads();  // smem is reused by the next batch
    }
  }
};

}  // namespace jax_natten::fused
