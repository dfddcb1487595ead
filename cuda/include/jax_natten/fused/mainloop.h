// The fused neighborhood-attention forward for one CTA (one Q tile of one batch and head):
// Q tile and KV tiles gathered into swizzled shared memory with a two-stage cp.async pipeline,
// S = Q K^T on the tensor cores (Q and K fragments through ldmatrix), mask (only on KV tiles not
// inside every window), online softmax in registers, O += P V with P read straight from the S
// accumulator's registers, then the epilogue. float16/bfloat16 run the m16n8k16 atom and read
// V^T through ldmatrix.trans; float32 runs the TF32 m16n8k8 atom three times per product on
// split operands (tf32.h: float32 accuracy), Q and K through ldmatrix on 32-bit elements, V with
// plain shared loads (ldmatrix.trans moves 16-bit elements only).
//
// Written once for every execution context Ctx (the real GPU one in launch.cuh, the host
// emulations in tests): the code here touches no thread or block index, barrier, shuffle,
// asynchronous copy, MMA or ldmatrix except through jax_natten/exec/context.h's API
// (thread_index, sync_threads, shfl_xor, cp_async_16/commit/wait, mma_op, ldsm_op).
#pragma once

#include <cute/tensor.hpp>

#include <cstdint>
#include <type_traits>

#include "jax_natten/exec/context.h"
#include "jax_natten/fused/epilogue.h"
#include "jax_natten/fused/mask.h"
#include "jax_natten/fused/params.h"
#include "jax_natten/fused/scheduler.h"
#include "jax_natten/fused/softmax.h"
#include "jax_natten/tf32.h"
#if !defined(__CUDACC__)
#include "jax_natten/exec/host_ldsm.h"  // HostContext's ldsm_op and mma_op, which the atoms below name
#include "jax_natten/exec/host_mma.h"   // in the emulation
#endif

namespace jax_natten::fused {

// The SM80 tensor-core atom of each input dtype (float32 accumulation), and how the V tile is
// read as the B operand of P V.
// 16-bit inputs: V^T through ldmatrix.trans, keys in order.
// float32: TF32 operands (m16n8k8); ldmatrix cannot transpose 32-bit elements, so each lane
// loads its V elements with plain shared loads, and the keys of every 8-key k-block are read in
// the order KeyOrder (MMA k index t + 4 j -> key 2 t + j), the order in which the S accumulator
// holds them (softmax.h: accumulator_as_a), so that P goes from S's registers to the A operand
// without a shuffle. Lane (g, t) then reads keys 2t and 2t + 1 at head-dim column g (+ 8 n):
// with the tiles' swizzle, rows 0, 2, 4, 6 of an 8-row block put a column's chunk in four
// distinct chunks of the 128-byte line, so the 32 lanes of a load touch 32 distinct banks.
template <class Elem>
struct Sm80Atom;
template <>
struct Sm80Atom<cute::half_t> {
  using Op = cute::SM80_16x8x16_F32F16F16F32_TN;
  using LoadColumns = cute::SM75_U16x8_LDSM_T;
  using KeyOrder = cute::Layout<cute::_8>;
};
template <>
struct Sm80Atom<cute::bfloat16_t> {
  using Op = cute::SM80_16x8x16_F32BF16BF16F32_TN;
  using LoadColumns = cute::SM75_U16x8_LDSM_T;
  using KeyOrder = cute::Layout<cute::_8>;
};
template <>
struct Sm80Atom<float> {
  using Op = cute::SM80_16x8x8_F32TF32TF32F32_TN;
  using LoadColumns = cute::UniversalCopy<float>;
  using KeyOrder = cute::Layout<cute::Shape<cute::_4, cute::_2>, cute::Stride<cute::_2, cute::_1>>;
};

// The copy operation of the V^T fragments: an ldmatrix atom goes through the context
// (exec/context.h), a plain copy is the same everywhere.
template <class Ctx, class Op>
struct ContextCopy {
  using type = typename Ctx::template ldsm_op<Op>;
};
template <class Ctx, class T>
struct ContextCopy<Ctx, cute::UniversalCopy<T>> {
  using type = cute::UniversalCopy<T>;
};

// Elem: float16 / bfloat16 (cute types) or float; kHeadDim: head-dim class (dim and dim_v at most
// this, padded with zeros); BQ, BK: rows of a Q / KV tile; kWarps warps stacked along M, so that a
// warp owns 16 whole rows of S and the 4 threads of a row reduce it with two shuffles.
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
  using Atom = Sm80Atom<Elem>;
  static constexpr int kAtomK = decltype(cute::size<2>(typename cute::MMA_Traits<typename Atom::Op>::Shape_MNK{}))::value;
  // A tile step of 16 along N and one atom's K (16 elements, 8 in float32): one x4 ldmatrix fills
  // the B registers of two n8 atoms.
  template <class Ctx>
  using TiledMma = cute::TiledMMA<cute::MMA_Atom<typename Ctx::template mma_op<typename Atom::Op>>,
                                  cute::Layout<cute::Shape<cute::Int<kWarps>, cute::_1, cute::_1>>,
                                  cute::Tile<cute::Int<16 * kWarps>, cute::_16, cute::Int<kAtomK>>>;
  // Q and K fragments (rows of the tile are M or N, head dim is K): ldmatrix on 16-byte rows of
  // 8 16-bit or 4 32-bit elements (a lane receives whole 32-bit words, so the float32 fragments
  // of the TF32 atom come out as they do for 16-bit pairs). V^T fragments (V's rows are K of
  // P V): Atom::LoadColumns.
  template <class Ctx>
  using LoadRows = cute::Copy_Atom<typename Ctx::template ldsm_op<cute::SM75_U32x4_LDSM_N>, Elem>;
  template <class Ctx>
  using LoadColumns = cute::Copy_Atom<typename ContextCopy<Ctx, typename Atom::LoadColumns>::type, Elem>;

  // Shared tiles are [rows][kHeadDim] in 8-row blocks whose 16-byte chunk c of row r sits at
  // chunk c ^ (r % 8) of its 128-byte line (64-byte lines and c ^ (r / 2 % 4) when a row has
  // 64 bytes, float16/bfloat16 at head dim 32): the 16-byte cp.async writes of a row and each
  // 8-row phase of an ldmatrix (one chunk of 8 consecutive rows) then touch every bank once.
  static constexpr int kLineBytes = kHeadDim * sizeof(Elem) % 128 == 0 ? 128 : 64;
  static constexpr int kLineElems = kLineBytes / sizeof(Elem);
  using SmemAtom = decltype(cute::composition(
      cute::Swizzle<kLineBytes == 128 ? 3 : 2, sizeof(Elem) == 2 ? 3 : 2, 3>{},
      cute::Layout<cute::Shape<cute::_8, cute::Int<kLineElems>>, cute::Stride<cute::Int<kLineElems>, cute::_1>>{}));
  using SmemQ = decltype(cute::tile_to_shape(SmemAtom{}, cute::Shape<cute::Int<BQ>, cute::Int<kHeadDim>>{}));
  using SmemKV = decltype(cute::tile_to_shape(SmemAtom{}, cute::Shape<cute::Int<BK>, cute::Int<kHeadDim>>{}));
  // A V tile seen as V^T: (head dim, key position) -> the element (key, head dim) of SmemKV, the
  // key positions of each 8-key block in Atom::KeyOrder.
  using Keys = decltype(cute::logical_product(typename Atom::KeyOrder{}, cute::Layout<cute::Int<BK / 8>>{}));
  using SmemVt = decltype(cute::composition(
      SmemKV{}, cute::make_layout(cute::Layout<cute::Int<kHeadDim>, cute::Int<BK>>{}, Keys{})));

  struct Shared {
    alignas(128) Elem q[BQ * kHeadDim];
    alignas(128) Elem k[kStages][BK * kHeadDim];
    alignas(128) Elem v[kStages][BK * kHeadDim];
    KeyTable<BK> keys;
  };
  static_assert(BQ == 16 * kWarps, "one m16 row block per warp");
  static_assert(kHeadDim % 32 == 0 && BK % 16 == 0, "tile sizes must fit the tile step and the swizzle");
  static_assert(sizeof(Elem) == 2 || sizeof(Elem) == 4, "16-bit or float32 elements");
  static_assert(BK <= kThreads, "one thread fills each key of the key table");
};

// Issue the copies of the `kRows` rows of a shared tile, gathered from token rows (`token(row)`,
// -1 for none). Each thread copies one 16-byte column of every kRowStep-th row, so that a row's
// token is computed once for all the tiles that share it: copy_chunk(row, col, token) issues
// (or zero-fills) the chunk of each.
template <class Cfg, int kRows, class Ctx, class RowToken, class CopyChunk>
JAX_NATTEN_CTA void gather_rows(const Ctx& ctx, const RowToken& token, const CopyChunk& copy_chunk) {
  constexpr int kChunksPerRow = Cfg::kHeadDim / Cfg::kChunk;
  constexpr int kRowStep = Cfg::kThreads / kChunksPerRow;
  static_assert(Cfg::kThreads % kChunksPerRow == 0, "a thread copies the same column of its rows");
  const int first_row = ctx.thread_index() / kChunksPerRow;
  const int col = (ctx.thread_index() % kChunksPerRow) * Cfg::kChunk;
  CUTE_UNROLL
  for (int i = 0; i < (kRows + kRowStep - 1) / kRowStep; ++i) {
    const int row = first_row + i * kRowStep;
    if (kRows % kRowStep == 0 || row < kRows) copy_chunk(row, col, token(row));
  }
}

// 16 zero bytes (all-zero bits are 0.0 in every element type).
struct alignas(16) ZeroChunk {
  uint32_t words[4] = {0, 0, 0, 0};
};

// One 16-byte chunk (row, col) of a shared tile with layout `tile`: from src + token * row_stride
// + col, or zeros for a row without a token or columns past `width`.
template <class Cfg, class Ctx, class Tile>
JAX_NATTEN_CTA void copy_chunk(const Ctx& ctx, typename Cfg::Elem* smem, const Tile& tile,
                               const typename Cfg::Elem* src, int64_t row_stride, int width, int row, int col,
                               int64_t token) {
  typename Cfg::Elem* chunk = smem + tile(row, col);
  if (token >= 0 && col < width) {
    ctx.cp_async_16(chunk, src + token * row_stride + col);
  } else {
    *reinterpret_cast<ZeroChunk*>(chunk) = ZeroChunk{};  // one 16-byte store, not kChunk narrow ones
  }
}

// Issues the loads of KV tile j of the CTA's tile t into the K and V tiles k_tile / v_tile (the
// whole tile box, keys past the union of the windows as zeros); a key's token serves its K and
// its V row.
template <class Cfg, class Ctx>
JAX_NATTEN_CTA void gather_kv_tile(const Ctx& ctx, const FusedParams& p, const CtaTile& t,
                                   const KeyTable<Cfg::BK>& keys, int j, const typename Cfg::Elem* k,
                                   const typename Cfg::Elem* v, typename Cfg::Elem* k_tile,
                                   typename Cfg::Elem* v_tile) {
  int origin[kMaxRank];
  kv_tile_origin(p, t, j, origin);
  const int64_t origin_token = token_of(p, t, origin);
  auto kv_token = [&](int row) -> int64_t {
    int key[kMaxRank];
    key_coords(keys.offsets[row], origin, key);
    bool inside = true;
    CUTE_UNROLL
    for (int a = 0; a < kMaxRank; ++a) inside = inside && key[a] < t.axis[a].kv_end;
    return inside ? origin_token + keys.token_deltas[row] : -1;
  };
  using SmemKV = typename Cfg::SmemKV;
  gather_rows<Cfg, Cfg::BK>(ctx, kv_token, [&](int row, int col, int64_t token) {
    copy_chunk<Cfg>(ctx, k_tile, SmemKV{}, k, int64_t(p.heads_kv) * p.dim, p.dim, row, col, token);
    copy_chunk<Cfg>(ctx, v_tile, SmemKV{}, v, int64_t(p.heads_kv) * p.dim_v, p.dim_v, row, col, token);
  });
}

// acc += A B^T for one k-block: a (values, MMA_M), b (values, MMA_N), acc (values, MMA_M,
// MMA_N). float32 operands take three TF32 MMAs on their split (tf32.h), each atom's operands
// split where they are used, so that only one atom's split B registers are live.
template <class TiledMma, class A, class B, class Acc>
JAX_NATTEN_CTA void mma_kblock(const TiledMma& mma, const A& a, const B& b, Acc& acc) {
  using namespace cute;
  if constexpr (std::is_same_v<std::remove_cv_t<typename A::value_type>, float>) {
    CUTE_UNROLL
    for (int m = 0; m < size<1>(a); ++m) {
      Tensor a_big = make_fragment_like<tfloat32_t>(a(_, m));
      Tensor a_small = make_fragment_like<tfloat32_t>(a(_, m));
      split_tf32(a(_, m), a_big, a_small);
      CUTE_UNROLL
      for (int n = 0; n < size<1>(b); ++n) {
        Tensor b_big = make_fragment_like<tfloat32_t>(b(_, n));
        Tensor b_small = make_fragment_like<tfloat32_t>(b(_, n));
        split_tf32(b(_, n), b_big, b_small);
        Tensor c = acc(_, m, n);
        gemm(mma, a_small, b_big, c);
        gemm(mma, a_big, b_small, c);
        gemm(mma, a_big, b_big, c);
      }
    }
  } else {
    gemm(mma, a, b, acc);
  }
}

// acc += A B^T over the k-blocks of the register fragments rA, rB; load(kb) fills k-block kb of
// the fragments read from shared memory, one k-block ahead of the MMA that consumes it.
template <class TiledMma, class RA, class RB, class Acc, class Load>
JAX_NATTEN_CTA void pipelined_gemm(const TiledMma& mma, const RA& rA, const RB& rB, Acc& acc, const Load& load) {
  using namespace cute;
  load(0);
  CUTE_UNROLL
  for (int kb = 0; kb < size<2>(rA); ++kb) {
    if (kb + 1 < size<2>(rA)) load(kb + 1);
    mma_kblock(mma, rA(_, _, kb), rB(_, _, kb), acc);
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

  const int thread = ctx.thread_index();
  if (thread < BK) set_key(p, t, thread, smem.keys);
  ctx.sync_threads();  // the key table is read by every thread's gathers and masks

  using SmemKV = typename Cfg::SmemKV;
  auto q_token = [&](int row) { return q_row_token(p, t, row); };
  auto load_kv = [&](int j) {
    gather_kv_tile<Cfg>(ctx, p, t, smem.keys, j, k, v, smem.k[j % Cfg::kStages], smem.v[j % Cfg::kStages]);
  };

  gather_rows<Cfg, BQ>(ctx, q_token, [&](int row, int col, int64_t token) {
    copy_chunk<Cfg>(ctx, smem.q, typename Cfg::SmemQ{}, q, int64_t(p.heads) * p.dim, p.dim, row, col, token);
  });
  if (t.kv_tiles > 0) load_kv(0);  // no tile 0 if the union of the windows is empty along an axis
  ctx.cp_async_commit();

  typename Cfg::template TiledMma<Ctx> mma;
  auto thr = mma.get_slice(thread);
  auto q_copy = make_tiled_copy_A(typename Cfg::template LoadRows<Ctx>{}, mma);
  auto k_copy = make_tiled_copy_B(typename Cfg::template LoadRows<Ctx>{}, mma);
  auto v_copy = make_tiled_copy_B(typename Cfg::template LoadColumns<Ctx>{}, mma);
  auto q_thr = q_copy.get_slice(thread);
  auto k_thr = k_copy.get_slice(thread);
  auto v_thr = v_copy.get_slice(thread);

  // Operand fragments hold the input dtype (the atom's own operand type is TF32 for float32: the
  // split happens in mma_kblock).
  Tensor sQ = make_tensor(make_smem_ptr(smem.q), typename Cfg::SmemQ{});
  Tensor q_smem = q_thr.partition_S(sQ);
  Tensor q_regs = make_tensor<Elem>(thr.partition_fragment_A(sQ).layout());
  Tensor q_regs_copy = q_thr.retile_D(q_regs);
  Tensor sK0 = make_tensor(make_smem_ptr(smem.k[0]), SmemKV{});
  Tensor k_regs = make_tensor<Elem>(thr.partition_fragment_B(sK0).layout());
  Tensor k_regs_copy = k_thr.retile_D(k_regs);
  Tensor sVt0 = make_tensor(make_smem_ptr(smem.v[0]), typename Cfg::SmemVt{});
  Tensor v_regs = make_tensor<Elem>(thr.partition_fragment_B(sVt0).layout());
  Tensor v_regs_copy = v_thr.retile_D(v_regs);

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
    Tensor k_smem = k_thr.partition_S(make_tensor(make_smem_ptr(smem.k[stage]), SmemKV{}));
    Tensor v_smem = v_thr.partition_S(make_tensor(make_smem_ptr(smem.v[stage]), typename Cfg::SmemVt{}));
    clear(acc_s);
    pipelined_gemm(mma, q_regs, k_regs, acc_s, [&](int kb) {
      copy(q_copy, q_smem(_, _, kb), q_regs_copy(_, _, kb));
      copy(k_copy, k_smem(_, _, kb), k_regs_copy(_, _, kb));
    });

    int origin[kMaxRank];
    kv_tile_origin(p, t, j, origin);
    if (rpb == nullptr && kv_tile_unmasked(p, t, origin)) {
      CUTE_UNROLL
      for (int i = 0; i < size(acc_s); ++i) acc_s(i) *= scale_log2;
    } else {
      CUTE_UNROLL
      for (int c = 0; c < size<1>(s_rc); ++c) {
        int key[kMaxRank];
        key_coords(smem.keys.offsets[get<1>(s_coords_rc(0, c))], origin, key);
        CUTE_UNROLL
        for (int r = 0; r < kRows; ++r) {
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

    // P in the input dtype (float32: S itself, split in mma_kblock), in the registers of S, viewed as
    // the A operand of P V.
    Tensor p_elem = make_tensor<Elem>(acc_s.layout());
    CUTE_UNROLL
    for (int i = 0; i < size(acc_s); ++i) p_elem(i) = Elem(acc_s(i));
    Tensor p_a = make_tensor(p_elem.data(), accumulator_as_a<Cfg::kAtomK>(p_elem.layout()));
    pipelined_gemm(mma, p_a, v_regs, acc_o, [&](int kb) { copy(v_copy, v_smem(_, _, kb), v_regs_copy(_, _, kb)); });
    ctx.sync_threads();  // everyone is done with this stage before tile j + 2 is loaded into it
  }

  store_output<Elem>(p, batch, head, softmax, o_rc, o_coords_rc, row_tokens);
}

}  // namespace jax_natten::fused
