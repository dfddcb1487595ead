// The unfused kernels as the dispatch (unfused_ffi.h) names them, and their launch: what each
// generated instantiation unit includes besides its kernel header and its platform's launch
// header. No XLA FFI headers here (launch_result.h says why).
#pragma once

#include <string>

#include "jax_natten/exec/context.h"
#include "jax_natten/exec/launch_result.h"
#include "jax_natten/params.h"

namespace jax_natten {

// The kernels and configurations the dispatch names (naive_kernels.cuh, gemm/config.h and
// gemm/pn.cuh, nn.cuh, in.cuh define them).
namespace naive {
template <int kThreads>
struct BlockConfig;
template <typename TW, typename T, class Config>
struct Pn;
template <typename TW, typename T, class Config>
struct Nn;
template <typename TW, typename T, class Config>
struct In;
}  // namespace naive
namespace gemm {
template <int kTileM, int kTileN, int kTileK, int kWarpsM, int kWarpsN>
struct TileConfig;
template <typename TW, typename T, class Config>
struct Pn;
template <typename TW, typename T, class Config>
struct Nn;
template <typename TW, typename T, class Config>
struct In;
}  // namespace gemm

// An implementation of the three operators: its kernel templates and the configuration they are
// built with (the one in CMakeLists.txt's UNFUSED_IMPLEMENTATIONS; a second configuration of an
// implementation needs a rule here that chooses between them).
template <template <typename, typename, class> class PnKernel, template <typename, typename, class> class NnKernel,
          template <typename, typename, class> class InKernel, class Configuration>
struct Implementation {
  using Config = Configuration;
  template <typename TW, typename T>
  using Pn = PnKernel<TW, T, Config>;
  template <typename TW, typename T>
  using Nn = NnKernel<TW, T, Config>;
  template <typename TW, typename T>
  using In = InKernel<TW, T, Config>;
};
using Naive = Implementation<naive::Pn, naive::Nn, naive::In, naive::BlockConfig<256>>;
using Gemm = Implementation<gemm::Pn, gemm::Nn, gemm::In, gemm::TileConfig<64, 64, 32, 2, 2>>;

// The launch of kernel K on a Launch with the pointer operands A... (params.h): K's grid (and
// its checks of p), then Launch::run. Defined here, instantiated only in the generated units.
template <class K, class Launch, class Operands>
struct Instance;
template <class K, class Launch, class... A>
struct Instance<K, Launch, Operands<A...>> {
  static exec::LaunchResult run(const Launch& launch, const UnfusedParams& p, A... operands);
};
template <class K, class Launch, class... A>
exec::LaunchResult Instance<K, Launch, Operands<A...>>::run(const Launch& launch, const UnfusedParams& p,
                                                            A... operands) {
  exec::Dim3 blocks;
  if (const std::string why = K::grid(p, &blocks); !why.empty()) {
    return {exec::LaunchResult::Kind::kInvalidArgument, std::string(K::kName) + ": " + why};
  }
  if (blocks.x == 0 || blocks.y == 0) return {};  // an empty output launches nothing
  return launch.template run<K>(blocks, K::kName, p, operands...);
}

// Whether the instantiation I is built: the generated jax_natten/unfused_instances.h sets it
// for each one CMake built; the dispatch returns an error for the others.
template <class I>
inline constexpr bool kBuilt = false;

}  // namespace jax_natten
