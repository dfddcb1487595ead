// Fiber backend of the host emulation (the fast default): the lanes of a CTA run as cooperative
// fibers on the calling OS thread. A lane runs until it waits (CTA barrier, warp rendezvous) or
// returns; the scheduler then resumes the next ready lane, round-robin. The last lane to arrive
// at a barrier releases the waiters and runs on. A switch is a _setjmp/_longjmp pair (tens of
// nanoseconds; swapcontext makes a signal-mask system call); ucontext only starts a fiber on its
// own stack. Same waits, same warp emulation as the thread backend, so the same results bit for
// bit. A deadlock, lanes returning while others wait, and lanes of one warp at different warp
// instructions abort with a message naming the lanes, where threads would hang.
//
// Fibers never preempt: a lane spinning on a flag that another lane sets hangs. ThreadSanitizer
// and AddressSanitizer do not follow the stack switches: use the thread backend under them.
#pragma once

#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "jax_natten/exec/host_context.h"
#include "jax_natten/exec/shadow_smem.h"

// The plain _longjmp: with _FORTIFY_SOURCE the header maps _longjmp to __longjmp_chk, which
// refuses a jump to another stack.
extern "C" [[noreturn]] void jax_natten_fiber_longjmp(jmp_buf, int) __asm__("_longjmp");

namespace jax_natten::exec {

#if defined(__SANITIZE_ADDRESS__) || (defined(__SANITIZE_THREAD__) && !defined(JAX_NATTEN_SHADOW_SMEM))
constexpr bool kFibersUnderSanitizer = true;
#else
constexpr bool kFibersUnderSanitizer = false;
#endif

class FiberCta final : public EmuCta {
 public:
  // Stack of one lane; only the pages a lane touches are backed.
  static constexpr size_t kStackBytes = 256 << 10;

  FiberCta(int threads, Dim3 block, Dim3 grid)
      : EmuCta(threads, block, grid), lanes_(threads), ready_(threads) {
    cta_barrier_.expected = threads;
    for (int w = 0; w * kWarpSize < threads; ++w) {
      warp_barriers_.emplace_back();
      warp_barriers_.back().expected = std::min(kWarpSize, threads - w * kWarpSize);
    }
  }

  void sync_threads() override {
    if (wait(cta_barrier_, "__syncthreads")) shadow::barrier();
  }
  void sync_warp(int warp, const char* what) override { wait(warp_barriers_[warp], what); }

  // Runs lane_body() on every lane; returns when all have returned.
  template <class Body>
  void run(Body& lane_body) {
    if (kFibersUnderSanitizer) {
      std::fprintf(stderr, "jax_natten: the fiber backend cannot run under ASan/TSan; use the thread backend\n");
      std::abort();
    }
    body_ = &lane_body;
    call_body_ = [](void* body) { (*static_cast<Body*>(body))(); };
    for (int t = 0; t < threads(); ++t) push_ready(t);
    t_cta = this;
    if (_setjmp(main_) == 0) resume(pop_ready());
    t_cta = nullptr;
  }

 private:
  struct Lane {
    jmp_buf context;
    bool started = false, done = false;
  };
  struct Rendezvous {
    int expected = 0, arrived = 0;
    const char* what = "";
    std::vector<int> waiters;
  };

  // Returns true in the lane that completes the rendezvous (before any waiter resumes).
  bool wait(Rendezvous& r, const char* what) {
    const int self = t_lane;
    if (r.arrived == 0) {
      r.what = what;
    } else if (r.what != what && std::strcmp(r.what, what) != 0) {
      divergent(r, what, self);
    }
    if (++r.arrived < r.expected) {
      r.waiters.push_back(self);
      switch_from(self);
      return false;
    }
    r.arrived = 0;
    for (int t : r.waiters) push_ready(t);
    r.waiters.clear();
    return true;
  }

  // Parks lane `self` (-1: a lane that has returned) and resumes the next ready lane, or run()
  // once every lane has returned.
  void switch_from(int self) {
    const int next = pop_ready();
    if (next < 0) {
      if (done_ == threads()) jax_natten_fiber_longjmp(main_, 1);
      stuck();
    }
    if (self >= 0 && _setjmp(lanes_[self].context) != 0) return;
    resume(next);
  }

  [[noreturn]] void resume(int lane) {
    t_lane = lane;
    if (lanes_[lane].started) jax_natten_fiber_longjmp(lanes_[lane].context, 1);
    lanes_[lane].started = true;
    getcontext(&boot_);
    boot_.uc_stack.ss_sp = stack(lane);
    boot_.uc_stack.ss_size = kStackBytes;
    boot_.uc_link = nullptr;
    makecontext(&boot_, &FiberCta::lane_main, 0);
    setcontext(&boot_);
    std::abort();
  }

  static void lane_main() {
    auto* cta = static_cast<FiberCta*>(t_cta);
    cta->call_body_(cta->body_);
    cta->lanes_[t_lane].done = true;
    ++cta->done_;
    cta->switch_from(-1);
  }

  // Stacks are mapped once per OS thread and reused by every CTA; the PROT_NONE page below each
  // turns an overflow into a segmentation fault instead of a corrupted neighbour.
  static char* stack(int lane) {
    static thread_local std::vector<char*> pool;
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    while (static_cast<int>(pool.size()) <= lane) {
      void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
      if (p == MAP_FAILED || mprotect(p, page, PROT_NONE) != 0) {
        std::perror("jax_natten: fiber stack");
        std::abort();
      }
      pool.push_back(static_cast<char*>(p) + page);
    }
    return pool[lane];
  }

  void push_ready(int lane) { ready_[(head_ + count_++) % threads()] = lane; }
  int pop_ready() {
    if (count_ == 0) return -1;
    const int lane = ready_[head_];
    head_ = (head_ + 1) % threads();
    --count_;
    return lane;
  }

  static std::string lane_list(std::vector<int> lanes) {  // {0, 1, 2, 5} -> "0-2,5"
    std::sort(lanes.begin(), lanes.end());
    std::string s;
    for (size_t i = 0; i < lanes.size();) {
      size_t j = i;
      while (j + 1 < lanes.size() && lanes[j + 1] == lanes[j] + 1) ++j;
      s += (s.empty() ? "" : ",") + std::to_string(lanes[i]) + (j > i ? "-" + std::to_string(lanes[j]) : "");
      i = j + 1;
    }
    return s;
  }
  [[noreturn]] void stuck() {
    std::vector<int> returned;
    for (int t = 0; t < threads(); ++t) {
      if (lanes_[t].done) returned.push_back(t);
    }
    std::fprintf(stderr, "jax_natten fiber CTA: no lane can run: %s\n",
                 returned.empty() ? "deadlock" : "lanes returned while others wait at a barrier");
    auto line = [](const std::string& what, const std::vector<int>& lanes) {
      if (!lanes.empty()) std::fprintf(stderr, "  %s: lanes %s\n", what.c_str(), lane_list(lanes).c_str());
    };
    line("waiting at __syncthreads", cta_barrier_.waiters);
    for (size_t w = 0; w < warp_barriers_.size(); ++w) {
      line("waiting at warp " + std::to_string(w) + " " + warp_barriers_[w].what, warp_barriers_[w].waiters);
    }
    line("returned", returned);
    std::abort();
  }
  [[noreturn]] void divergent(const Rendezvous& r, const char* what, int self) {
    std::fprintf(stderr, "jax_natten fiber CTA: lanes of warp %d at different warp instructions: lane %d at %s, lanes %s at %s\n",
                 self / kWarpSize, self, what, lane_list(r.waiters).c_str(), r.what);
    std::abort();
  }

  std::vector<Lane> lanes_;
  std::vector<int> ready_;  // ring buffer; a lane is in it at most once
  int head_ = 0, count_ = 0, done_ = 0;
  Rendezvous cta_barrier_;
  std::vector<Rendezvous> warp_barriers_;
  void* body_ = nullptr;
  void (*call_body_)(void*) = nullptr;
  jmp_buf main_;
  ucontext_t boot_;
};

}  // namespace jax_natten::exec
