// Thread backend of the host emulation: each lane of a CTA is a std::thread, the CTA barrier and
// the warp rendezvous are mutex/condition-variable barriers. Slow (OS threads, futex waits), but
// what ThreadSanitizer and AddressSanitizer understand: a missing barrier is a data race there.
#pragma once

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "jax_natten/exec/host_context.h"

namespace jax_natten::exec {

// A reusable barrier for a fixed number of threads.
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const unsigned long generation = generation_;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++generation_;
      released_.notify_all();
      return;
    }
    released_.wait(lock, [&] { return generation_ != generation; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable released_;
  int count_, arrived_ = 0;
  unsigned long generation_ = 0;
};

class ThreadCta final : public EmuCta {
 public:
  ThreadCta(int threads, Dim3 block, Dim3 grid) : EmuCta(threads, block, grid), cta_(threads) {
    for (int w = 0; w * kWarpSize < threads; ++w) {
      warps_.push_back(std::make_unique<Barrier>(std::min(kWarpSize, threads - w * kWarpSize)));
    }
  }
  void sync_threads() override { cta_.arrive_and_wait(); }
  void sync_warp(int warp, const char*) override { warps_[warp]->arrive_and_wait(); }

  // Runs lane_body() on every lane, each on its own thread; returns when all have returned.
  template <class Body>
  void run(Body& lane_body) {
    std::vector<std::thread> lanes;
    lanes.reserve(threads());
    for (int t = 0; t < threads(); ++t) {
      lanes.emplace_back([this, t, &lane_body] {
        t_lane = t;
        t_cta = this;
        lane_body();
      });
    }
    for (std::thread& lane : lanes) lane.join();
  }

 private:
  Barrier cta_;
  std::vector<std::unique_ptr<Barrier>> warps_;
};

}  // namespace jax_natten::exec
