// The fused neighborhood-attention forward for one CTA (one Q tile of one batch and head):
// Q tile and KV tiles gathered into shared memory with a two-stage cp.async pipeline, S = Q K^T
// on the tensor cores, mask (only on KV tiles not inside every window), online softmax in
// registers, O += P V with P read straight from the S accumulator's registers, then the epilogue.
//
// Written once for every execution context Ctx (the real GPU one in kernel.cuh, the host
// emulations in tests): the code here touches no thread or block index, barrier, shuffle or
// asynchronous copy except through
// jax_natten/exec/context.h's API (thread_index, sync_threads, shfl_xor, cp_async_16/commit/wait,
// mma_op).
#pragma once

#include <cute/tensor.hpp>

#include <cstdint>

#include "jax_natten/exec/context.h"
#include "jax_natten/fused/epilogue.h"
#include "jax_natten/fused/mask.h"
#include "jax_natten/fused/params.h"
#include "jax_natten/fused/scheduler.h"
#include "jax_natten/fused/softmax.h"

namespace jax_natten::fused {

// The SM80 tensor-core atom of each 16-bit input dtype (float32 accumulation).
template <class Elem>
struct Sm80Atom;
template <>
struct Sm80Atom<cute::half_t> {
  using Op = cute::SM80_16x8x16_F32F16F16F32_TN;
};
template <>
struct Sm80Atom<cute::bfloat16_t> {
  using Op = cute::SM80_16x8x16_F32BF16BF16F32_TN;
};

// Elem: float16 / bfloat16 (cute types); kHeadDim: head-dim class (dim and dim_v at most this,
// padded with zeros); BQ, BK: rows of a Q / KV tile; kWarps warps stacked along M, so that a warp
// owns 16 whole rows of S and the 4 threads of a row reduce it with two shuffles.
template <class Elem_, int kHeadDim_, int BQ_, int BK_, int kWarps_>
struct Config {
  using Elem = Elem_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int BQ = BQ_;
  static constexpr int BK = BK_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kRowThreads = 4;
  static constexpr int kStages = 2;                 // K/V tiles in flight
  static constexpr int kChunk = 16 / sizeof(Elem);  // elements per 16-byte copy
  template <class Ctx>
  using TiledMma = cute::TiledMMA<cute::MMA_Atom<typename Ctx::template mma_op<typename Sm80Atom<Elem>::Op>>,
                                  cute::Layout<cute::Shape<cute::Int<kWarps>, cute::_1, cute::_1>>>;
  struct Shared {
    alignas(128) Elem q[BQ * kHeadDim];
    alignas(128) Elem k[kStages][BK * kHeadDim];
    alignas(128) Elem v[kStages][BK * kHeadDim];
  };
  static_assert(BQ == 16 * kWarps, "one m16 row block per warp");
  static_assert(kHeadDim % 16 == 0 && BK % 16 == 0, "tile sizes must fit the m16n8k16 atom");
};

// Issue the copies of `rows` gathered token rows (`token[row]`, -1 for none) of `width` valid
// elements into a [rows][kHeadDim] smem tile; padding rows and columns become zeros.
template <class Cfg, class Ctx, class RowToken>
JAX_NATTEN_CTA void load_rows(const Ctx& ctx, typename Cfg::Elem* dst, const typename Cfg::Elem* src,
                                int rows, int64_t row_stride, int width, const RowToken& token) {
  constexpr int kChunksPerRow = Cfg::kHeadDim / Cfg::kChunk;
  for (int c = ctx.thread_index(); c < rows * kChunksPerRow; c += Cfg::kThreads) {
    const int row = c / kChunksPerRow, col = (c % kChunksPerRow) * Cfg::kChunk;
    const int64_t t = token(row);
    typename Cfg::Elem* chunk = dst + row * Cfg::kHeadDim + col;
    if (t >= 0 && col < width) {
      ctx.cp_async_16(chunk, src + t * row_stride + col);
    } else {
      for (int e = 0; e < Cfg::kChunk; ++e) chunk[e] = typename Cfg::Elem(0.f);
    }
  }
}

// acc (C fragment) += sA (M x K) * sB (N x K)^T, both in shared memory, k-block by k-block.
template <class TiledMma, class ThrMma, class SA, class SB, class Acc>
JAX_NATTEN_CTA void smem_gemm(const TiledMma& mma, const ThrMma& thr, const SA& sA, const SB& sB, Acc& acc) {
  using namespace cute;
  auto tA = thr.partition_A(sA);
  auto tB = thr.partition_B(sB);
  auto rA = make_fragment_like(tA(_, _, 0));
  auto rB = make_fragment_like(tB(_, _, 0));
  CUTE_UNROLL
  for (int kb = 0; kb < size<2>(tA); ++kb) {
    copy(tA(_, _, kb), rA);
    copy(tB(_, _, kb), rB);
    gemm(mma, rA, rB, acc);
  }
}

template <class Cfg, class Ctx>
JAX_NATTEN_CTA void fused_forward_cta(const Ctx& ctx, const FusedParams& p, int64_t q_tile_index, int head,
                                      int64_t batch, typename Cfg::Shared& smem) {
  using namespace cute;
  using Elem = typename Cfg::Elem;
  constexpr int D = Cfg::kHeadDim, BQ = Cfg::BQ, BK = Cfg::BK;

  CtaTile t;
  if (!make_cta_tile(p, q_tile_index, &t)) return;
  const int kv_head = head / (p.heads / p.heads_kv);
  const Elem* q = static_cast<const Elem*>(p.q) + (batch * p.tokens * p.heads + head) * p.dim;
  const Elem* k = static_cast<const Elem*>(p.k) + (batch * p.tokens * p.heads_kv + kv_head) * p.dim;
  const Elem* v = static_cast<const Elem*>(p.v) + (batch * p.tokens * p.heads_kv + kv_head) * p.dim_v;

  Elem* smem_q = smem.q;
  Elem* smem_k = smem.k[0];
  Elem* smem_v = smem.v[0];

  // Token of Q row `row`, -1 past the group's end.
  auto q_token = [&](int row) -> int64_t {
    int u[kMaxRank];
    box_offsets(p.q_tile, row, u);
    CUTE_UNROLL
  for (int a = 0; a < kMaxRank; ++a) {
      if (u[a] >= t.axis[a].nq) return -1;
      u[a] += t.axis[a].u0;
    }
    return token_of(p, t, u);
  };
  // Issue the loads of KV tile j into its stage (the whole tile box, keys past the union of the
  // windows as zeros).
  auto load_kv = [&](int j) {
    int origin[kMaxRank];
    kv_tile_origin(p, t, j, origin);
    auto kv_token = [&](int row) -> int64_t {
      int key[kMaxRank];
      column_keys(p, origin, row, key);
      CUTE_UNROLL
  for (int a = 0; a < kMaxRank; ++a) {
        if (key[a] >= t.axis[a].kv_end) return -1;
      }
      return token_of(p, t, key);
    };
    const int stage = j % Cfg::kStages;
    load_rows<Cfg>(ctx, smem_k + stage * BK * D, k, BK, int64_t(p.heads_kv) * p.dim, p.dim, kv_token);
    load_rows<Cfg>(ctx, smem_v + stage * BK * D, v, BK, int64_t(p.heads_kv) * p.dim_v, p.dim_v, kv_token);
  };

  load_rows<Cfg>(ctx, smem_q, q, BQ, int64_t(p.heads) * p.dim, p.dim, q_token);
  load_kv(0);
  ctx.cp_async_commit();

  typename Cfg::template TiledMma<Ctx> mma;
  auto thr = mma.get_slice(ctx.thread_index());
  Tensor sQ = make_tensor(make_smem_ptr(smem_q), make_layout(make_shape(Int<BQ>{}, Int<D>{}), LayoutRight{}));

  Tensor acc_o = partition_fragment_C(mma, Shape<Int<BQ>, Int<D>>{});
  clear(acc_o);
  Tensor acc_s = partition_fragment_C(mma, Shape<Int<BQ>, Int<BK>>{});
  Tensor s_rc = make_tensor(acc_s.data(), rowcol(acc_s.layout()));
  Tensor o_rc = make_tensor(acc_o.data(), rowcol(acc_o.layout()));
  Tensor s_coords = thr.partition_C(make_identity_tensor(Shape<Int<BQ>, Int<BK>>{}));
  Tensor s_coords_rc = make_tensor(s_coords.data(), rowcol(s_coords.layout()));
  Tensor o_coords = thr.partition_C(make_identity_tensor(Shape<Int<BQ>, Int<D>>{}));
  Tensor o_coords_rc = make_tensor(o_coords.data(), rowcol(o_coords.layout()));

  constexpr int kRows = decltype(size<0>(s_rc))::value;
  RowWindow row_windows[kRows];
  int64_t row_tokens[kRows];
  CUTE_UNROLL
  for (int r = 0; r < kRows; ++r) {
    const int row = get<0>(s_coords_rc(r, 0));
    row_windows[r] = row_window(p, t, row);
    row_tokens[r] = q_token(row);
  }
  OnlineSoftmax<kRows, Cfg::kRowThreads> softmax;
  const float scale_log2 = p.scale * kLog2e;
  const Elem* rpb = static_cast<const Elem*>(p.rpb);
  int rpb_window = 1;
  CUTE_UNROLL
  for (int a = 0; a < kMaxRank; ++a) rpb_window *= 2 * p.grid.axis[a].kernel_size - 1;

  for (int j = 0; j < t.kv_tiles; ++j) {
    if (j + 1 < t.kv_tiles) load_kv(j + 1);
    ctx.cp_async_commit();
    ctx.template cp_async_wait<1>();  // Q and KV tile j have landed (this thread's copies)
    ctx.sync_threads();               // ... and every other thread's

    const int stage = j % Cfg::kStages;
    Tensor sK = make_tensor(make_smem_ptr(smem_k + stage * BK * D),
                            make_layout(make_shape(Int<BK>{}, Int<D>{}), LayoutRight{}));
    Tensor sVt = make_tensor(make_smem_ptr(smem_v + stage * BK * D),
                             make_layout(make_shape(Int<D>{}, Int<BK>{}), make_stride(_1{}, Int<D>{})));
    clear(acc_s);
    smem_gemm(mma, thr, sQ, sK, acc_s);

    int origin[kMaxRank];
    kv_tile_origin(p, t, j, origin);
    if (rpb == nullptr && kv_tile_unmasked(p, t, origin)) {
      CUTE_UNROLL
      for (int i = 0; i < size(acc_s); ++i) acc_s(i) *= scale_log2;
    } else {
      CUTE_UNROLL
      for (int r = 0; r < kRows; ++r) {
        CUTE_UNROLL
        for (int c = 0; c < size<1>(s_rc); ++c) {
          int key[kMaxRank];
          column_keys(p, origin, get<1>(s_coords_rc(r, c)), key);
          float x = -INFINITY;
          if (in_window(row_windows[r], key)) {
            x = s_rc(r, c) * scale_log2;
            if (rpb != nullptr) {
              x += float(rpb[head * rpb_window + bias_offset(p, row_windows[r], key)]) * kLog2e;
            }
          }
          s_rc(r, c) = x;
        }
      }
    }
    softmax.update(ctx, s_rc, o_rc);

    // P in the input dtype, in the registers of S, viewed as the A operand of P V.
    Tensor p_elem = make_tensor<Elem>(acc_s.layout());
    CUTE_UNROLL
    for (int i = 0; i < size(acc_s); ++i) p_elem(i) = Elem(acc_s(i));
    Tensor p_a = make_tensor(p_elem.data(), accumulator_as_a(p_elem.layout()));
    auto tV = thr.partition_B(sVt);
    auto rV = make_fragment_like(tV(_, _, 0));
    CUTE_UNROLL
    for (int kb = 0; kb < size<2>(tV); ++kb) {
      copy(tV(_, _, kb), rV);
      gemm(mma, p_a(_, _, kb), rV, acc_o);
    }
    ctx.sync_threads();  // everyone is done with this stage before tile j + 2 is loaded into it
  }

  store_output<Elem>(p, batch, head, softmax, o_rc, o_coords_rc, row_tokens);
}

}  // namespace jax_natten::fused
