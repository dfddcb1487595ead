// LaunchResult: what a platform's launch (DeviceLaunch, HostLaunch) and an unfused instantiation
// (unfused_instance.h) report, without the XLA FFI headers: every generated instantiation unit
// includes this, and parsing xla/ffi/api/ffi.h cost about 1 s a unit in g++ and 5 s in nvcc (host
// and two architectures). ffi_util.h's ToError makes the handlers' ffi::Error of it.
#pragma once

#include <string>

namespace jax_natten::exec {

struct LaunchResult {
  enum class Kind {
    kLaunched,
    kInvalidArgument,  // the kernel refused the parameters (its grid() checks)
    kPlatformError,    // the platform failed the launch (a CUDA error)
  };
  Kind kind = Kind::kLaunched;
  std::string message;
};

}  // namespace jax_natten::exec
