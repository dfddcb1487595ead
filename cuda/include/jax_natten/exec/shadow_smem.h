// Shared-memory race shadow for the fiber backend. A translation unit compiled with
// -fsanitize=thread -DJAX_NATTEN_SHADOW_SMEM gets GCC's TSan instrumentation (a call before every
// load and store) but is linked with cuda/emu/shadow_smem.cc instead of libtsan: that runtime
// keeps, per byte of the tracked CTA shared memory, the lane that wrote it and the lane(s) that
// read it since the last CTA barrier, and reports a read of another lane's write or a write over
// another lane's access (a missing __syncthreads). One fiber runs at a time, so this is exact and
// repeatable. Warp rendezvous do not end an epoch: on the GPU only a barrier orders shared memory.
// Without JAX_NATTEN_SHADOW_SMEM the hooks are no-ops.
#pragma once

#include <cstddef>

namespace jax_natten::exec::shadow {
#ifdef JAX_NATTEN_SHADOW_SMEM
void begin(const void* smem, size_t bytes, const int* lane);  // track it; *lane: the running lane
void barrier();                                              // a CTA barrier: a new epoch
long end();                                                  // stop; the races seen since begin()
#else
inline void begin(const void*, size_t, const int*) {}
inline void barrier() {}
inline long end() { return 0; }
#endif
}  // namespace jax_natten::exec::shadow
