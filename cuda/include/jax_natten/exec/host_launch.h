// HostLaunch: runs a CTA-level kernel K in the host emulation (host_grid.h), with the interface
// of DeviceLaunch (device_launch.cuh). The backend that runs a CTA's lanes is the fiber one
// unless the environment variable JAX_NATTEN_EMULATION_LANES=threads asks for OS threads (for
// ThreadSanitizer / AddressSanitizer builds).
#pragma once

#include <cstdlib>
#include <cstring>

#include "jax_natten/exec/host_grid.h"
#include "jax_natten/exec/launch_result.h"

namespace jax_natten::exec {

struct HostLaunch {
  Lanes lanes = Lanes::kFibers;

  static HostLaunch from_environment() {
    const char* lanes = std::getenv("JAX_NATTEN_EMULATION_LANES");
    return HostLaunch{lanes != nullptr && std::strcmp(lanes, "threads") == 0 ? Lanes::kThreads : Lanes::kFibers};
  }

  template <class K, class... Args>
  LaunchResult run(Dim3 grid, const char*, Args... args) const {
    run_grid<K>(lanes, grid, args...);
    return {};
  }
};

}  // namespace jax_natten::exec
