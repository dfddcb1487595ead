// The fused neighborhood-attention backward for one CTA: one KV tile of one batch and KV head,
// its dK and dV accumulated in registers over the query heads of that KV head (GQA reduced in
// the kernel) and over the Q tiles whose neighborhoods reach the KV tile (the inverse
// neighborhood, neighborhood.h's inverse_window, as a box of the forward's Q tiles). Per Q tile:
//   S^T = K Q^T, P^T = exp(scale S^T (+ bias) - LSE) (0 outside the window), dP^T = V dO^T,
//   dS^T = P^T (dP^T - delta), P and dS (rounded to 16 bits) to shared memory, then
//   dV += P^T dO, dK += scale dS^T Q, dQ += scale dS K (added to a float32 dQ by atomics; in
//   deterministic mode backward_dq.h computes dQ instead, and this kernel skips it).
// 8 warps, 4 along M by 2 along N of every product: a warp holds a quarter of the rows and half
// of the columns of each accumulator, so dK and dV (key x head dim, float32, live across the
// whole loop) take 64 registers a thread at head dim 128 rather than 128 with 4 warps of whole
// rows, which spilled. A warp then holds only half of the queries of its keys' P^T and dS^T,
// while dV += P^T dO and dK += dS^T Q reduce over all of them, so P and dS go through shared
// memory (read back transposed with ldmatrix.trans) instead of straight from S's registers.
// delta = rowsum(dO * O) - dLSE is the caller's (float32, one per query row): a loss that reads
// the LSE then gets its gradient. float16 / bfloat16 only (the m16n8k16 atom).
// Written against the execution context like the forward (exec/context.h), with its tile
// layouts (mainloop.h: Config), Q tiles (scheduler.h: make_cta_tile) and masks (mask.h).
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

// One axis of a backward CTA's work: its group, its keys [v0, v0 + nk) and the forward's Q
// tiles [q_tile_first, q_tile_first + q_tiles) that hold every query whose window reaches them.
struct KvAxisTile {
  int group;
  int group_length;
  int v0;
  int nk;
  int q_tile_first;
  int q_tiles;
};

struct KvCtaTile {
  KvAxisTile axis[kMaxRank];
  int q_tiles;  // product over the axes
};

// The KV tile of CTA `index` in [0, count_kv_tiles); false past its group's end.
JAX_NATTEN_HOST_DEVICE bool make_kv_cta_tile(const FusedParams& p, int64_t index, KvCtaTile* t) {
  t->q_tiles = 1;
  CUTE_UNROLL
  for (int a = kMaxRank - 1; a >= 0; --a) {
    const AxisParams& ax = p.grid.axis[a];
    const int per_group = kv_tiles_per_group(ax, p.kv_tile[a]);
    const int along = static_cast<int>(index % (int64_t(ax.dilation) * per_group));
    index /= int64_t(ax.dilation) * per_group;
    KvAxisTile& at = t->axis[a];
    at.group = along / per_group;
    at.group_length = group_length(ax, at.group);
    at.v0 = (along % per_group) * p.kv_tile[a];
    if (at.v0 >= at.group_length) return false;
    at.nk = imin(p.kv_tile[a], at.group_length - at.v0);
    // Windows never move back along a group, so the queries reaching any of the keys lie between
    // the first query of the first key and the last query of the last key.
    const Range first = inverse_window(ax, at.v0 * ax.dilation + at.group);
    const Range last = inverse_window(ax, (at.v0 + at.nk - 1) * ax.dilation + at.group);
    at.q_tile_first = first.start / p.q_tile[a];
    at.q_tiles = last.end > first.start ? ceil_div(last.end, p.q_tile[a]) - at.q_tile_first : 0;
    t->q_tiles *= at.q_tiles;
  }
  return true;
}

// The forward's index (make_cta_tile) of visited Q tile `j` (row-major over the axes' q_tiles).
JAX_NATTEN_HOST_DEVICE int64_t visited_q_tile_index(const FusedParams& p, const KvCtaTile& t, int j) {
  int along[kMaxRank];
  CUTE_UNROLL
  for (int a = kMaxRank - 1; a >= 0; --a) {
    const int per_group = q_tiles_per_group(p.grid.axis[a], p.q_tile[a]);
    along[a] = t.axis[a].group * per_group + t.axis[a].q_tile_first + j % t.axis[a].q_tiles;
    j /= t.axis[a].q_tiles;
  }
  int64_t index = 0;
  CUTE_UNROLL
  for (int a = 0; a < kMaxRank; ++a) {
    index = index * (int64_t(p.grid.axis[a].dilation) * q_tiles_per_group(p.grid.axis[a], p.q_tile[a])) + along[a];
  }
  return index;
}

// The backward's tiles: BK keys by BQ queries, both the forward's Q tile rows (dQ = dS K puts the
// queries on M), and 8 warps: 4 along M (16 rows each), 2 along N.
template <class Elem, int kHeadDim>
struct BackwardConfig : Config<Elem, kHeadDim, kQTileRows, kQTileRows, kWarps> {
  using Base = Config<Elem, kHeadDim, kQTileRows, kQTileRows, kWarps>;
  static constexpr int BQ = Base::BQ, BK = Base::BK, D = kHeadDim;
  static constexpr int kWarpsM = BK / 16, kWarpsN = 2;
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  // A warp's tile step: 16 rows of M by 16 columns of N (one x4 ldmatrix fills the B registers of
  // two n8 atoms), by one atom's K.
  template <class Ctx>
  using TiledMma = cute::TiledMMA<cute::MMA_Atom<typename Ctx::template mma_op<typename Base::Atom::Op>>,
                                  cute::Layout<cute::Shape<cute::Int<kWarpsM>, cute::Int<kWarpsN>, cute::_1>>,
                                  cute::Tile<cute::Int<16 * kWarpsM>, cute::Int<16 * kWarpsN>, cute::Int<Base::kAtomK>>>;
  // The A operand dS read transposed from shared memory, out of the (key, query) dS^T tile.
  template <class Ctx>
  using LoadRowsTransposed = cute::Copy_Atom<typename Ctx::template ldsm_op<cute::SM75_U16x8_LDSM_T>, Elem>;
  // (head dim, query) views of the Q and dO tiles: the B operands of dK += dS^T Q and dV += P^T dO.
  using SmemQt = decltype(cute::composition(
      typename Base::SmemQ{}, cute::make_layout(cute::Layout<cute::Int<D>, cute::Int<BQ>>{}, cute::Layout<cute::Int<BQ>>{})));
  // P^T and dS^T as (key, query), queries contiguous: the A operands of dV += P^T dO and
  // dK += dS^T Q, written from S^T's accumulator a pair of adjacent queries (32 bits) at a time;
  // and the (query, key) view of dS^T, the A operand of dQ = dS K.
  using SmemPds = decltype(cute::tile_to_shape(typename Base::SmemAtom{}, cute::Shape<cute::Int<BK>, cute::Int<BQ>>{}));
  using SmemPdsT = decltype(cute::composition(
      SmemPds{}, cute::make_layout(cute::Layout<cute::Int<BQ>, cute::Int<BK>>{}, cute::Layout<cute::Int<BK>>{})));

  struct Shared {
    alignas(128) Elem k[BK * D];
    alignas(128) Elem v[BK * D];
    alignas(128) Elem q[BQ * D];
    alignas(128) Elem d_out[BQ * D];
    alignas(128) Elem p[BQ * BK];
    alignas(128) Elem ds[BQ * BK];
    RowWindow windows[BQ];
    int64_t q_tokens[BQ];
    // The CTA's KV tile, its keys' in-group coordinates and tokens (-1 past the group's end):
    // read from here inside the Q-tile loop rather than held in registers across it.
    KvCtaTile kv_tile;
    int key_coords[BK][kMaxRank];
    int64_t key_tokens[BK];
    float lse_log2[BQ];
    float delta[BQ];
  };
  static_assert(sizeof(Elem) == 2, "the backward runs the 16-bit atom");
  static_assert(BK % 16 == 0 && BQ % (16 * kWarpsN) == 0 && D % (16 * kWarpsN) == 0, "tiles of whole warp steps");
  static_assert(BQ <= kThreads && BK <= kThreads, "one thread fills each row's entries");
};

// Two 16-bit elements stored with one 32-bit access.
template <class Elem>
struct alignas(2 * sizeof(Elem)) ElemPair {
  Elem first, second;
};

// Stores each pair (i, i + 1), i even, of a (key, query) accumulator's values (two adjacent
// queries of one key: the SM80 C fragment's layout) into the (key, query) tile at element i's
// coordinates, 32 bits at a time.
template <class Elem, class Tile, class Coords, class Value>
JAX_NATTEN_CTA void store_pairs(Tile& tile, const Coords& coords, const Value& value) {
  using cute::get;
  CUTE_UNROLL
  for (int i = 0; i < cute::size(coords); i += 2) {
    const int key = get<0>(coords(i)), query = get<1>(coords(i));
    *reinterpret_cast<ElemPair<Elem>*>(&tile(key, query)) = ElemPair<Elem>{value(i), value(i + 1)};
  }
}

template <class Cfg, class Ctx>
JAX_NATTEN_CTA void fused_backward_cta(const Ctx& ctx, const BackwardParams& bp, int64_t kv_tile_index, int kv_head,
                                       int64_t batch, typename Cfg::Shared& smem) {
  using namespace cute;
  using Elem = typename Cfg::Elem;
  constexpr int D = Cfg::kHeadDim, BQ = Cfg::BQ, BK = Cfg::BK;
  const FusedParams& p = bp.fwd;

  KvCtaTile kt;
  if (!make_kv_cta_tile(p, kv_tile_index, &kt)) return;
  // In-group coordinates of key row `row` of the tile (false past the group's end).
  auto key_of = [&](int row, int* coords) {
    box_offsets(p.kv_tile, row, coords);
    bool inside = true;
    CUTE_UNROLL
    for (int a = 0; a < kMaxRank; ++a) {
      inside = inside && coords[a] < kt.axis[a].nk;
      coords[a] += kt.axis[a].v0;
    }
    return inside;
  };
  const int thread = ctx.thread_index();
  if (thread == 0) smem.kv_tile = kt;
  if (thread < BK) {
    CtaTile kv_groups;
    CUTE_UNROLL
    for (int a = 0; a < kMaxRank; ++a) kv_groups.axis[a].group = kt.axis[a].group;
    int* coords = smem.key_coords[thread];
    smem.key_tokens[thread] = key_of(thread, coords) ? token_of(p, kv_groups, coords) : -1;
  }
  ctx.sync_threads();  // the KV tile's entries are in shared memory
  const int64_t kv_row_base = batch * p.tokens * p.heads_kv + kv_head;
  const Elem* k = static_cast<const Elem*>(p.k) + kv_row_base * p.dim;
  const Elem* v = static_cast<const Elem*>(p.v) + kv_row_base * p.dim_v;
  using SmemKV = typename Cfg::SmemKV;
  using SmemQ = typename Cfg::SmemQ;
  gather_rows<Cfg, BK>(ctx, [&](int row) { return smem.key_tokens[row]; }, [&](int row, int col, int64_t token) {
    copy_chunk<Cfg>(ctx, smem.k, SmemKV{}, k, int64_t(p.heads_kv) * p.dim, p.dim, row, col, token);
    copy_chunk<Cfg>(ctx, smem.v, SmemKV{}, v, int64_t(p.heads_kv) * p.dim_v, p.dim_v, row, col, token);
  });
  ctx.cp_async_commit();

  typename Cfg::template TiledMma<Ctx> mma;
  auto thr = mma.get_slice(thread);
  auto rows_a = make_tiled_copy_A(typename Cfg::template LoadRows<Ctx>{}, mma);
  auto rows_b = make_tiled_copy_B(typename Cfg::template LoadRows<Ctx>{}, mma);
  auto cols_b = make_tiled_copy_B(typename Cfg::template LoadColumns<Ctx>{}, mma);
  auto cols_a = make_tiled_copy_A(typename Cfg::template LoadRowsTransposed<Ctx>{}, mma);
  auto rows_a_thr = rows_a.get_slice(thread);
  auto cols_a_thr = cols_a.get_slice(thread);
  auto rows_b_thr = rows_b.get_slice(thread);
  auto cols_b_thr = cols_b.get_slice(thread);

  Tensor sK = make_tensor(make_smem_ptr(smem.k), SmemKV{});
  Tensor sV = make_tensor(make_smem_ptr(smem.v), SmemKV{});
  Tensor sKt = make_tensor(make_smem_ptr(smem.k), typename Cfg::SmemVt{});
  Tensor sQ = make_tensor(make_smem_ptr(smem.q), SmemQ{});
  Tensor sdO = make_tensor(make_smem_ptr(smem.d_out), SmemQ{});
  Tensor sQt = make_tensor(make_smem_ptr(smem.q), typename Cfg::SmemQt{});
  Tensor sdOt = make_tensor(make_smem_ptr(smem.d_out), typename Cfg::SmemQt{});
  Tensor sPt = make_tensor(make_smem_ptr(smem.p), typename Cfg::SmemPds{});
  Tensor sdSt = make_tensor(make_smem_ptr(smem.ds), typename Cfg::SmemPds{});
  Tensor sdS = make_tensor(make_smem_ptr(smem.ds), typename Cfg::SmemPdsT{});

  // Operand fragments and their shared-memory sources.
  Tensor k_regs = make_tensor<Elem>(thr.partition_fragment_A(sK).layout());
  Tensor k_src = rows_a_thr.partition_S(sK);
  Tensor k_dst = rows_a_thr.retile_D(k_regs);
  Tensor v_regs = make_tensor<Elem>(thr.partition_fragment_A(sV).layout());
  Tensor v_src = rows_a_thr.partition_S(sV);
  Tensor v_dst = rows_a_thr.retile_D(v_regs);
  Tensor q_regs = make_tensor<Elem>(thr.partition_fragment_B(sQ).layout());
  Tensor q_src = rows_b_thr.partition_S(sQ);
  Tensor q_dst = rows_b_thr.retile_D(q_regs);
  Tensor do_regs = make_tensor<Elem>(thr.partition_fragment_B(sdO).layout());
  Tensor do_src = rows_b_thr.partition_S(sdO);
  Tensor do_dst = rows_b_thr.retile_D(do_regs);
  Tensor qt_regs = make_tensor<Elem>(thr.partition_fragment_B(sQt).layout());
  Tensor qt_src = cols_b_thr.partition_S(sQt);
  Tensor qt_dst = cols_b_thr.retile_D(qt_regs);
  Tensor dot_regs = make_tensor<Elem>(thr.partition_fragment_B(sdOt).layout());
  Tensor dot_src = cols_b_thr.partition_S(sdOt);
  Tensor dot_dst = cols_b_thr.retile_D(dot_regs);
  Tensor kt_regs = make_tensor<Elem>(thr.partition_fragment_B(sKt).layout());
  Tensor kt_src = cols_b_thr.partition_S(sKt);
  Tensor kt_dst = cols_b_thr.retile_D(kt_regs);
  Tensor ds_regs = make_tensor<Elem>(thr.partition_fragment_A(sdS).layout());
  Tensor ds_src = cols_a_thr.partition_S(sdS);
  Tensor ds_dst = cols_a_thr.retile_D(ds_regs);
  Tensor pt_regs = make_tensor<Elem>(thr.partition_fragment_A(sPt).layout());
  Tensor pt_src = rows_a_thr.partition_S(sPt);
  Tensor pt_dst = rows_a_thr.retile_D(pt_regs);
  Tensor dst_regs = make_tensor<Elem>(thr.partition_fragment_A(sdSt).layout());
  Tensor dst_src = rows_a_thr.partition_S(sdSt);
  Tensor dst_dst = rows_a_thr.retile_D(dst_regs);

  Tensor acc_dk = partition_fragment_C(mma, Shape<Int<BK>, Int<D>>{});
  Tensor acc_dv = partition_fragment_C(mma, Shape<Int<BK>, Int<D>>{});
  clear(acc_dk);
  clear(acc_dv);
  Tensor acc_s = partition_fragment_C(mma, Shape<Int<BK>, Int<BQ>>{});
  Tensor acc_dp = partition_fragment_C(mma, Shape<Int<BK>, Int<BQ>>{});
  Tensor acc_dq = partition_fragment_C(mma, Shape<Int<BQ>, Int<D>>{});
  Tensor s_rc = make_tensor(acc_s.data(), rowcol(acc_s.layout()));
  Tensor s_coords = thr.partition_C(make_identity_tensor(Shape<Int<BK>, Int<BQ>>{}));
  Tensor s_coords_rc = make_tensor(s_coords.data(), rowcol(s_coords.layout()));
  Tensor kd_coords = thr.partition_C(make_identity_tensor(Shape<Int<BK>, Int<D>>{}));
  Tensor q_coords = thr.partition_C(make_identity_tensor(Shape<Int<BQ>, Int<D>>{}));

  constexpr int kRows = decltype(size<0>(s_rc))::value;

  const float scale_log2 = p.scale * kLog2e;
  const Elem* rpb = static_cast<const Elem*>(p.rpb);
  int rpb_window = 1;
  CUTE_UNROLL
  for (int a = 0; a < kMaxRank; ++a) rpb_window *= 2 * p.grid.axis[a].kernel_size - 1;
  const int group = p.heads / p.heads_kv;

  for (int head = kv_head * group; head < (kv_head + 1) * group; ++head) {
    const int64_t q_row_base = batch * p.tokens * p.heads + head;
    const Elem* q = static_cast<const Elem*>(p.q) + q_row_base * p.dim;
    const Elem* d_out = static_cast<const Elem*>(bp.d_out) + q_row_base * p.dim_v;
    for (int j = 0; j < smem.kv_tile.q_tiles; ++j) {
      CtaTile qt;
      make_cta_tile(p, visited_q_tile_index(p, smem.kv_tile, j), &qt);
      auto q_token = [&](int row) { return q_row_token(p, qt, row); };
      gather_rows<Cfg, BQ>(ctx, q_token, [&](int row, int col, int64_t token) {
        copy_chunk<Cfg>(ctx, smem.q, SmemQ{}, q, int64_t(p.heads) * p.dim, p.dim, row, col, token);
        copy_chunk<Cfg>(ctx, smem.d_out, SmemQ{}, d_out, int64_t(p.heads) * p.dim_v, p.dim_v, row, col, token);
      });
      ctx.cp_async_commit();
      if (thread < BQ) {
        const int64_t token = q_token(thread);
        smem.windows[thread] = row_window(p, qt, thread);
        smem.q_tokens[thread] = token;
        // Rows past the group's end: P = exp2(s - inf) = 0 also on the unmasked path.
        const int64_t row = (batch * p.tokens + token) * p.heads + head;
        smem.lse_log2[thread] = token >= 0 ? bp.lse[row] * kLog2e : INFINITY;
        smem.delta[thread] = token >= 0 ? bp.delta[row] : 0.f;
      }
      ctx.template cp_async_wait<0>();  // K, V (first tile) and this Q tile have landed (this thread's copies)
      ctx.sync_threads();                // ... and every other thread's, with the row entries

      clear(acc_s);
      pipelined_gemm(mma, k_regs, q_regs, acc_s, [&](int kb) {
        copy(rows_a, k_src(_, _, kb), k_dst(_, _, kb));
        copy(rows_b, q_src(_, _, kb), q_dst(_, _, kb));
      });

      // P^T in place of S^T.
      int kv_origin[kMaxRank];
      CUTE_UNROLL
      for (int a = 0; a < kMaxRank; ++a) kv_origin[a] = smem.kv_tile.axis[a].v0;
      const bool unmasked = rpb == nullptr && kv_tile_unmasked(p, qt, kv_origin);
      CUTE_UNROLL
      for (int c = 0; c < size<1>(s_rc); ++c) {
        const int col = get<1>(s_coords_rc(0, c));
        const RowWindow& w = smem.windows[col];
        const float lse_log2 = smem.lse_log2[col];
        CUTE_UNROLL
        for (int r = 0; r < kRows; ++r) {
          const int* key = smem.key_coords[get<0>(s_coords_rc(r, c))];
          float prob = 0.f;
          if (unmasked) {
            prob = exp2f(s_rc(r, c) * scale_log2 - lse_log2);
          } else if (in_window(w, key)) {
            float x = s_rc(r, c) * scale_log2;
            if (rpb != nullptr) x += float(rpb[head * rpb_window + bias_offset(p, w, key)]) * kLog2e;
            prob = exp2f(x - lse_log2);
          }
          s_rc(r, c) = prob;
        }
      }
      Tensor p_elem = make_tensor<Elem>(acc_s.layout());
      CUTE_UNROLL
      for (int i = 0; i < size(acc_s); ++i) p_elem(i) = Elem(acc_s(i));
      store_pairs<Elem>(sPt, s_coords, p_elem);

      clear(acc_dp);
      pipelined_gemm(mma, v_regs, do_regs, acc_dp, [&](int kb) {
        copy(rows_a, v_src(_, _, kb), v_dst(_, _, kb));
        copy(rows_b, do_src(_, _, kb), do_dst(_, _, kb));
      });
      Tensor ds_elem = make_tensor<Elem>(acc_dp.layout());
      CUTE_UNROLL
      for (int i = 0; i < size(acc_dp); ++i) {
        const int query = get<1>(s_coords(i));
        ds_elem(i) = Elem(float(p_elem(i)) * (acc_dp(i) - smem.delta[query]));
      }
      store_pairs<Elem>(sdSt, s_coords, ds_elem);
      ctx.sync_threads();  // P and dS are in shared memory

      pipelined_gemm(mma, pt_regs, dot_regs, acc_dv, [&](int kb) {
        copy(rows_a, pt_src(_, _, kb), pt_dst(_, _, kb));
        copy(cols_b, dot_src(_, _, kb), dot_dst(_, _, kb));
      });
      pipelined_gemm(mma, dst_regs, qt_regs, acc_dk, [&](int kb) {
        copy(rows_a, dst_src(_, _, kb), dst_dst(_, _, kb));
        copy(cols_b, qt_src(_, _, kb), qt_dst(_, _, kb));
      });
      if (bp.d_query != nullptr) {  // null in deterministic mode: backward_dq.h computes dQ
        clear(acc_dq);
        pipelined_gemm(mma, ds_regs, kt_regs, acc_dq, [&](int kb) {
          copy(cols_a, ds_src(_, _, kb), ds_dst(_, _, kb));
          copy(cols_b, kt_src(_, _, kb), kt_dst(_, _, kb));
        });
        CUTE_UNROLL
        for (int i = 0; i < size(acc_dq); ++i) {
          const int row = get<0>(q_coords(i)), d = get<1>(q_coords(i));
          const int64_t token = smem.q_tokens[row];
          if (token >= 0 && d < p.dim) {
            ctx.atomic_add(bp.d_query + ((batch * p.tokens + token) * p.heads + head) * p.dim + d, acc_dq(i) * p.scale);
          }
        }
      }
      ctx.sync_threads();  // everyone is done with the Q tile, P, dS and the row entries before the next
    }
  }

  Elem* d_key = static_cast<Elem*>(bp.d_key) + kv_row_base * p.dim;
  Elem* d_value = static_cast<Elem*>(bp.d_value) + kv_row_base * p.dim_v;
  CUTE_UNROLL
  for (int i = 0; i < size(acc_dk); ++i) {
    const int row = get<0>(kd_coords(i)), d = get<1>(kd_coords(i));
    const int64_t token = smem.key_tokens[row];
    if (token < 0) continue;
    const int64_t offset = token * p.heads_kv;
    if (d < p.dim) d_key[offset * p.dim + d] = Elem(acc_dk(i) * p.scale);
    if (d < p.dim_v) d_value[offset * p.dim_v + d] = Elem(acc_dv(i));
  }
}

// The backward as a CTA-level kernel (exec/device_context.cuh's contract): block (x, y, z) is KV
// tile x of KV head y for batches z, z + grid.z, ... The params' fwd must have been through pad_axes.
template <class Cfg>
struct BackwardKernel {
  using Config = Cfg;
  using Shared = typename Cfg::Shared;
  static constexpr int kThreads = Cfg::kThreads;

  template <class Ctx>
  static JAX_NATTEN_CTA void run(const Ctx& ctx, Shared& smem, const BackwardParams& p) {
    const exec::Dim3 block = ctx.block_index(), grid = ctx.grid_size();
    for (int64_t batch = block.z; batch < p.fwd.batch; batch += grid.z) {
      fused_backward_cta<Cfg>(ctx, p, block.x, static_cast<int>(block.y), batch, smem);
      if (batch + grid.z < p.fwd.batch) ctx.sync_threads();  // smem is reused by the next batch
    }
  }
};

inline exec::Dim3 backward_launch_grid(const FusedParams& p) {
  return {static_cast<unsigned>(count_kv_tiles(p)), static_cast<unsigned>(p.heads_kv),
          static_cast<unsigned>(p.batch < kMaxGridZ ? p.batch : kMaxGridZ)};
}

// The instantiations that exist: 16-bit inputs whose KV tile has the Q tile's rows (kv_tile_rows:
// head-dim classes up to 128).
template <class Elem, int kHeadDim>
constexpr bool kBackwardBuilt = sizeof(Elem) == 2 && kv_tile_rows(kHeadDim, sizeof(Elem)) == kQTileRows;

}  // namespace jax_natten::fused
