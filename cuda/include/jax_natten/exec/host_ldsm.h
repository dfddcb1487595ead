// Host emulation of the SM75 ldmatrix atoms (ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16):
// HostLdsm<Op> is what HostContext::ldsm_op<Op> names, and it behaves as Op does on a warp. Each
// lane passes the address of one 16-byte row of an 8x8 matrix of 16-bit elements; the lanes whose
// rows the instruction uses (0-7 for x1, 0-15 for x2, all for x4) read their row from shared
// memory into the warp's staging area (so that the smem race shadow sees each read as the read
// of the lane that supplied the address), the warp meets, and each lane assembles its destination
// registers from the staged rows. Which staged bits land in which register bit is read from
// CuTe's own Copy_Traits<Op> layouts (SrcLayout: (lane, bit of its row) -> reference bit;
// DstLayout: (lane, bit of its registers) -> reference bit), so .trans and the x1/x2/x4 shapes
// need no code of their own, and a kernel that partitions shared memory for an atom gets exactly
// the registers the real instruction would give it.
//
// Emulated: SM75_U32x1_LDSM_N, SM75_U32x2_LDSM_N, SM75_U32x4_LDSM_N, SM75_U16x2_LDSM_T,
// SM75_U16x4_LDSM_T, SM75_U16x8_LDSM_T.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include <cute/arch/copy_sm75.hpp>
#include <cute/atom/copy_traits_sm75.hpp>
#include <cute/tensor.hpp>

#include "jax_natten/exec/host_context.h"

namespace jax_natten::exec {

// The atom's bit layouts. A separate policy so that tests can emulate a deliberately wrong one.
template <class Op>
struct LdsmLayouts {
  using Traits = cute::Copy_Traits<Op>;
  static int src(int lane, int bit) { return typename Traits::SrcLayout{}(lane, bit); }
  static int dst(int lane, int bit) { return typename Traits::DstLayout{}(lane, bit); }
};

template <class Op, class Layouts = LdsmLayouts<Op>>
struct HostLdsm {
  using SRegisters = cute::uint128_t[1];
  using DRegisters = typename Op::DRegisters;
  static_assert(std::is_same_v<typename Op::SRegisters, SRegisters>, "HostLdsm emulates ldmatrix atoms");
  static constexpr int kRegisters = std::extent_v<DRegisters>;
  static constexpr int kHalves = 2 * kRegisters;  // 16-bit elements a lane receives

  // Where destination element h of lane t comes from: staged row `lane`, element `half`; and which
  // lanes' rows are read at all.
  struct Maps {
    int8_t lane[kWarpSize][kHalves];
    int8_t half[kWarpSize][kHalves];
    bool reads[kWarpSize] = {};
    Maps() {
      constexpr int kReferenceBits = kWarpSize * kHalves * 16;
      int owner_lane[kReferenceBits], owner_bit[kReferenceBits];
      for (int& x : owner_lane) x = -1;
      // A reference bit that several lanes' rows hold (the unused lanes of x1/x2, whose SrcLayout
      // repeats the used ones') comes from the lowest such lane, the one whose address PTX reads.
      for (int t = kWarpSize - 1; t >= 0; --t) {
        for (int b = 0; b < 128; ++b) {
          const int r = Layouts::src(t, b);
          owner_lane[r] = t;
          owner_bit[r] = b;
        }
      }
      for (int t = 0; t < kWarpSize; ++t) {
        for (int h = 0; h < kHalves; ++h) {
          const int r = Layouts::dst(t, 16 * h);
          const int from = owner_lane[r], bit = owner_bit[r];
          // An element moves whole: its 16 bits are 16 consecutive bits of one staged element.
          bool whole = from >= 0 && bit % 16 == 0;
          for (int i = 1; whole && i < 16; ++i) {
            const int ri = Layouts::dst(t, 16 * h + i);
            whole = owner_lane[ri] == from && owner_bit[ri] == bit + i;
          }
          if (!whole) {
            std::fprintf(stderr, "jax_natten HostLdsm: the atom's layouts do not move 16-bit elements\n");
            std::abort();
          }
          lane[t][h] = static_cast<int8_t>(from);
          half[t][h] = static_cast<int8_t>(bit / 16);
          reads[from] = true;
        }
      }
    }
  };
  static const Maps& maps() {
    static const Maps m;
    return m;
  }

  template <class... Registers>
  static void copy(const cute::uint128_t& smem_row, Registers&... dst) {
    static_assert(sizeof...(Registers) == kRegisters && (std::is_same_v<Registers, uint32_t> && ...),
                  "HostLdsm::copy: one uint32_t per destination register");
    const int warp = t_lane / kWarpSize, lane = t_lane % kWarpSize;
    WarpStage& stage = t_cta->warp(warp);
    const Maps& m = maps();
    if (m.reads[lane]) {
      if (reinterpret_cast<uintptr_t>(&smem_row) % 16 != 0) {
        std::fprintf(stderr, "jax_natten HostLdsm: lane %d: ldmatrix row address %p is not 16-byte aligned\n", t_lane,
                     static_cast<const void*>(&smem_row));
        std::abort();
      }
      // Element loads rather than memcpy: the race shadow sees the loads its instrumentation
      // marks, and its runtime intercepts no library call.
      const auto* row = reinterpret_cast<const uint16_t*>(&smem_row);
      for (int e = 0; e < 8; ++e) stage.row[lane][e] = row[e];
    }
    t_cta->sync_warp(warp, "ldmatrix");
    uint32_t out[kRegisters];
    for (int r = 0; r < kRegisters; ++r) {
      const uint32_t lo = stage.row[m.lane[lane][2 * r]][m.half[lane][2 * r]];
      const uint32_t hi = stage.row[m.lane[lane][2 * r + 1]][m.half[lane][2 * r + 1]];
      out[r] = lo | (hi << 16);
    }
    t_cta->sync_warp(warp, "ldmatrix");  // no lane posts again before every lane has read
    int r = 0;
    ((dst = out[r++]), ...);
  }
};

}  // namespace jax_natten::exec

namespace cute {
template <class Op, class Layouts>
struct Copy_Traits<jax_natten::exec::HostLdsm<Op, Layouts>> : Copy_Traits<Op> {};
}  // namespace cute
