// Host emulation of SM80 mma.sync atoms: HostMma<Op> is what HostContext::mma_op<Op> names, and
// it behaves as Op does on a warp: the 32 lanes post their A and B registers, then each lane
// computes its own C/D values. Which lane holds which element is read from CuTe's own
// MMA_Traits<Op> layouts (ALayout, BLayout, CLayout: (lane, value) -> (m, k), (n, k), (m, n)),
// so the emulation checks that kernel code puts every element where the real instruction reads
// it. Products are exact and summed in float32 in k order (the hardware's summation order is
// unspecified; results agree to rounding). TF32 operands drop the 13 low mantissa bits, as the
// tensor core ignores them.
//
// Emulated: SM80_16x8x16_F32F16F16F32_TN, SM80_16x8x16_F32BF16BF16F32_TN,
// SM80_16x8x8_F32TF32TF32F32_TN (all: D, C float[4]; A uint32_t[4]; B uint32_t[2]).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include <cute/atom/mma_traits_sm80.hpp>
#include <cute/tensor.hpp>

#include "jax_natten/exec/host_context.h"

namespace jax_natten::exec {

// Where the atom's operands sit: (lane, value) -> column-major index in (M, K), (N, K), (M, N).
// A separate policy so that tests can emulate a deliberately wrong layout.
template <class Op>
struct AtomLayouts {
  using Traits = cute::MMA_Traits<Op>;
  static int a(int lane, int value) { return typename Traits::ALayout{}(lane, value); }
  static int b(int lane, int value) { return typename Traits::BLayout{}(lane, value); }
  static int c(int lane, int value) { return typename Traits::CLayout{}(lane, value); }
};

template <class Op, class Layouts = AtomLayouts<Op>>
struct HostMma {
  using Traits = cute::MMA_Traits<Op>;
  using DRegisters = float[4];
  using ARegisters = uint32_t[4];
  using BRegisters = uint32_t[2];
  using CRegisters = float[4];
  static_assert(std::is_same_v<typename Op::DRegisters, DRegisters> &&
                    std::is_same_v<typename Op::ARegisters, ARegisters> &&
                    std::is_same_v<typename Op::BRegisters, BRegisters> &&
                    std::is_same_v<typename Op::CRegisters, CRegisters>,
                "HostMma emulates the SM80 atoms with float[4] C/D, uint32_t[4] A and uint32_t[2] B");

  using ValueA = typename Traits::ValTypeA;
  using ValueB = typename Traits::ValTypeB;
  static constexpr int kM = cute::size<0>(typename Traits::Shape_MNK{});
  static constexpr int kN = cute::size<1>(typename Traits::Shape_MNK{});
  static constexpr int kK = cute::size<2>(typename Traits::Shape_MNK{});
  static constexpr int kValuesA = cute::size<1>(typename Traits::ALayout{});
  static constexpr int kValuesB = cute::size<1>(typename Traits::BLayout{});
  static constexpr int kValuesC = cute::size<1>(typename Traits::CLayout{});
  static_assert(kValuesA <= 8 && kValuesB <= 4 && kValuesC == 4, "WarpStage holds 8 A and 4 B values a lane");

  struct Owner {
    int lane, value;
  };
  // Who holds A(m, k) and B(n, k), and which (m, n) each of a lane's C values is.
  struct Maps {
    Owner a[kM][kK];
    Owner b[kN][kK];
    int c_m[kWarpSize][kValuesC];
    int c_n[kWarpSize][kValuesC];
    Maps() {
      for (int t = 0; t < kWarpSize; ++t) {
        for (int v = 0; v < kValuesA; ++v) {
          const int i = Layouts::a(t, v);
          a[i % kM][i / kM] = {t, v};
        }
        for (int v = 0; v < kValuesB; ++v) {
          const int i = Layouts::b(t, v);
          b[i % kN][i / kN] = {t, v};
        }
        for (int v = 0; v < kValuesC; ++v) {
          const int i = Layouts::c(t, v);
          c_m[t][v] = i % kM;
          c_n[t][v] = i / kM;
        }
      }
    }
  };
  static const Maps& maps() {
    static const Maps m;
    return m;
  }

  // Value v of a lane's operand registers as the tensor core reads it.
  template <class Value>
  static float decode(const uint32_t* regs, int v) {
    if constexpr (sizeof(Value) == 2) {
      const uint16_t bits = static_cast<uint16_t>(regs[v / 2] >> (16 * (v % 2)));
      return static_cast<float>(Value::bitcast(bits));
    } else {
      static_assert(std::is_same_v<Value, cute::tfloat32_t>, "HostMma: 16-bit or TF32 operands");
      const uint32_t bits = regs[v] & ~uint32_t(0x1fff);
      float x;
      std::memcpy(&x, &bits, 4);
      return x;
    }
  }

  static void fma(float& d0, float& d1, float& d2, float& d3, const uint32_t& a0, const uint32_t& a1,
                  const uint32_t& a2, const uint32_t& a3, const uint32_t& b0, const uint32_t& b1, const float& c0,
                  const float& c1, const float& c2, const float& c3) {
    const int warp = t_lane / kWarpSize, lane = t_lane % kWarpSize;
    WarpStage& stage = t_cta->warp(warp);
    const uint32_t a[4] = {a0, a1, a2, a3}, b[2] = {b0, b1};
    for (int v = 0; v < kValuesA; ++v) stage.a[lane][v] = decode<ValueA>(a, v);
    for (int v = 0; v < kValuesB; ++v) stage.b[lane][v] = decode<ValueB>(b, v);
    t_cta->sync_warp(warp, "mma.sync");
    const Maps& m = maps();
    const float c[4] = {c0, c1, c2, c3};
    float d[4];
    for (int v = 0; v < kValuesC; ++v) {
      const int row = m.c_m[lane][v], col = m.c_n[lane][v];
      float acc = c[v];
      for (int k = 0; k < kK; ++k) {
        const Owner oa = m.a[row][k], ob = m.b[col][k];
        acc += stage.a[oa.lane][oa.value] * stage.b[ob.lane][ob.value];
      }
      d[v] = acc;
    }
    t_cta->sync_warp(warp, "mma.sync");  // no lane posts again before every lane has read
    d0 = d[0], d1 = d[1], d2 = d[2], d3 = d[3];
  }
};

}  // namespace jax_natten::exec

namespace cute {
template <class Op, class Layouts>
struct MMA_Traits<jax_natten::exec::HostMma<Op, Layouts>> : MMA_Traits<Op> {};
}  // namespace cute
