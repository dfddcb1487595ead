// Fuzz harness over the FFI layer of the unfused operators, built with AddressSanitizer and UBSan
// (tests/test_emulation_cpp.py): the host-emulation handlers (cuda/emu/handlers.h, the same
// buffer and attribute checks as the CUDA handlers, unfused_ffi.h / ffi_util.h) called directly
// with random, mostly malformed, operands: attribute spans of the wrong length, zero, negative and
// past-int32 kernel sizes, strides and dilations, empty and mismatched axes, heads not a multiple
// of the key/value heads, wrong dtypes and output shapes. Every buffer is allocated to its exact
// size, so a read or write past it is an ASan report. Each call must either succeed, with every
// output element written (outputs arrive poisoned with NaN), or return INVALID_ARGUMENT with a
// message; any other outcome fails.
//   ffi_fuzz_test SECONDS SEED   fuzz for about SECONDS; exit 0 = pass, prints the counts
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "../../cuda/emu/handlers.h"
#include "jax_natten/gemm/in.cuh"
#include "jax_natten/gemm/nn.cuh"
#include "jax_natten/gemm/pn.cuh"
#include "jax_natten/naive_kernels.cuh"

// The kernels are instantiated in this unit (no generated extern-template list is included), so
// every instantiation counts as built.
template <class K, class Launch, class Operands>
inline constexpr bool jax_natten::kBuilt<jax_natten::Instance<K, Launch, Operands>> = true;

namespace na = jax_natten;
namespace ffi = xla::ffi;
using na::Gemm;
using na::Naive;

namespace {

// One operand: dims, dtype and exactly-sized storage (a vector of bytes: ASan bounds it).
struct Tensor {
  std::vector<int64_t> dims;
  XLA_FFI_DataType dtype;
  std::vector<uint8_t> bytes;
  XLA_FFI_Buffer buffer;

  Tensor(std::vector<int64_t> d, XLA_FFI_DataType t, std::mt19937_64& rng) : dims(std::move(d)), dtype(t) {
    int64_t count = 1;
    for (int64_t x : dims) count *= x;
    bytes.resize(static_cast<size_t>(count) * ffi::ByteWidth(ffi::DataType(dtype)));
    for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
      // Small finite values in every 16-bit or 32-bit float dtype: 0x3c00-0x3cff (float16 ~1),
      // 0x3f80-ish (bfloat16 ~1); as float32 halves they form finite numbers too.
      bytes[i] = static_cast<uint8_t>(rng());
      bytes[i + 1] = static_cast<uint8_t>(0x3c);
    }
    buffer = XLA_FFI_Buffer{XLA_FFI_Buffer_STRUCT_SIZE, nullptr, dtype, bytes.data(),
                            static_cast<int64_t>(dims.size()), dims.data()};
  }
  ffi::AnyBuffer any() const { return ffi::AnyBuffer(&buffer); }
  bool all_finite() const {
    const int64_t n = any().element_count();
    for (int64_t i = 0; i < n; ++i) {
      float x;
      switch (dtype) {
        case XLA_FFI_DataType_F32: std::memcpy(&x, bytes.data() + 4 * i, 4); break;
        case XLA_FFI_DataType_F16: x = __half2float(reinterpret_cast<const __half*>(bytes.data())[i]); break;
        case XLA_FFI_DataType_BF16: x = __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(bytes.data())[i]); break;
        default: return true;
      }
      if (!std::isfinite(x)) return false;
    }
    return true;
  }
};

struct Fuzzer {
  std::mt19937_64 rng;
  std::map<std::string, int64_t> counts;
  double bad = 0;  // the chance of each malformed choice in this call (0 for about half the calls)

  int64_t pick(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; }

  // Mostly a plausible value, sometimes an adversarial one.
  int64_t attribute(int64_t plausible) {
    if (!chance(bad)) return plausible;
    switch (pick(0, 5)) {
      case 0: return 0;
      case 1: return -pick(1, 5);
      case 2: return (int64_t{1} << 32) + pick(0, 5);
      case 3: return INT64_MIN;
      case 4: return INT64_MAX;
      default: return plausible;
    }
  }
  XLA_FFI_DataType dtype() {
    const XLA_FFI_DataType good[] = {XLA_FFI_DataType_F32, XLA_FFI_DataType_F16, XLA_FFI_DataType_BF16};
    const XLA_FFI_DataType bad[] = {XLA_FFI_DataType_F64, XLA_FFI_DataType_S32, XLA_FFI_DataType_PRED};
    return chance(this->bad) ? bad[pick(0, 2)] : good[pick(0, 2)];
  }
  // A dim that is usually `want`, sometimes another.
  int64_t perturb(int64_t want) { return chance(bad) ? pick(0, want + 2) : want; }

  void one() {
    bad = chance(0.5) ? 0 : 0.1;
    const int rank = static_cast<int>(pick(1, 3));
    const int attr_rank = chance(bad) ? static_cast<int>(pick(0, 4)) : rank;
    std::vector<int64_t> batch_dims(pick(0, 2));
    for (auto& b : batch_dims) b = pick(0, 2);
    std::vector<int64_t> spatial(rank), kernel(attr_rank), stride(attr_rank), dilation(attr_rank), causal(attr_rank);
    for (auto& s : spatial) s = pick(chance(0.05) ? 0 : 1, 9);
    for (int a = 0; a < attr_rank; ++a) {
      const int64_t length = a < rank ? spatial[a] : 5;
      kernel[a] = attribute(pick(2, std::max<int64_t>(2, length)));
      stride[a] = attribute(pick(1, std::max<int64_t>(1, kernel[a] > 0 && kernel[a] < 16 ? kernel[a] : 1)));
      dilation[a] = attribute(pick(1, 2));
      causal[a] = pick(0, 1);
    }
    int64_t window = 1;
    for (int64_t k : kernel) window *= (k > 0 && k < 16) ? k : 1;
    const int64_t heads_kv = pick(chance(bad) ? 0 : 1, 2);
    const int64_t heads = chance(0.05) ? 0 : heads_kv * pick(1, 2) + (chance(bad) ? 1 : 0);
    const int64_t dim = 8 * pick(0, 2), dim_v = 8 * pick(0, 2);
    auto shape = [&](int64_t h, int64_t last) {
      std::vector<int64_t> d(batch_dims);
      d.insert(d.end(), spatial.begin(), spatial.end());
      d.push_back(perturb(h));
      d.push_back(perturb(last));
      return d;
    };
    const XLA_FFI_DataType t = dtype(), tw = chance(0.5) ? XLA_FFI_DataType_F32 : t;
    ffi::Span<const int64_t> ks(kernel.data(), kernel.size()), ss(stride.data(), stride.size()),
        ds(dilation.data(), dilation.size()), cs(causal.data(), causal.size());
    const bool gemm = chance(0.5);
    ffi::Error error;
    std::string op;
    Tensor* result = nullptr;
    std::vector<Tensor> keep;
    keep.reserve(4);
    switch (pick(0, 2)) {
      case 0: {
        op = "pn";
        int64_t rpb_count = heads;
        for (int64_t k : kernel) rpb_count *= (k > 0 && k < 16) ? 2 * k - 1 : 1;
        keep.emplace_back(shape(heads, dim), t, rng);
        keep.emplace_back(shape(heads_kv, dim), chance(bad) ? dtype() : t, rng);
        keep.emplace_back(std::vector<int64_t>{chance(0.5) ? 0 : std::max<int64_t>(perturb(rpb_count), chance(bad) ? 1 : 0)},
                          t, rng);
        keep.emplace_back(shape(heads, window), tw, rng);
        result = &keep[3];
        const float empty_value = 0.f;
        error = gemm ? na::emu::Pn<Gemm>(keep[0].any(), keep[1].any(), keep[2].any(), ks, ss, ds, cs, 0.5f, empty_value,
                                         result->any())
                     : na::emu::Pn<Naive>(keep[0].any(), keep[1].any(), keep[2].any(), ks, ss, ds, cs, 0.5f, empty_value,
                                          result->any());
        break;
      }
      case 1: {
        op = "nn";
        keep.emplace_back(shape(heads, window), tw, rng);
        keep.emplace_back(shape(heads_kv, dim_v), t, rng);
        keep.emplace_back(shape(heads, dim_v), t, rng);
        result = &keep[2];
        error = gemm ? na::emu::Nn<Gemm>(keep[0].any(), keep[1].any(), ks, ss, ds, cs, 1.f, result->any())
                     : na::emu::Nn<Naive>(keep[0].any(), keep[1].any(), ks, ss, ds, cs, 1.f, result->any());
        break;
      }
      default: {
        op = "in";
        keep.emplace_back(shape(heads, window), tw, rng);
        keep.emplace_back(shape(heads, dim), t, rng);
        keep.emplace_back(shape(heads_kv, dim), t, rng);
        result = &keep[2];
        error = gemm ? na::emu::In<Gemm>(keep[0].any(), keep[1].any(), ks, ss, ds, cs, 1.f, result->any())
                     : na::emu::In<Naive>(keep[0].any(), keep[1].any(), ks, ss, ds, cs, 1.f, result->any());
        break;
      }
    }
    const std::string name = op + (gemm ? "_gemm" : "_naive");
    if (error.success()) {
      if (!result->all_finite()) {
        std::fprintf(stderr, "FAIL %s succeeded but left unwritten (NaN) output elements\n", name.c_str());
        std::exit(1);
      }
      ++counts[name + " ran"];
      return;
    }
    if (error.errc() != ffi::ErrorCode::kInvalidArgument || error.message().empty()) {
      std::fprintf(stderr, "FAIL %s: error code %d, message '%s'\n", name.c_str(), static_cast<int>(*error.errc()),
                   error.message().c_str());
      std::exit(1);
    }
    ++counts[name + " rejected"];
  }
};

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 10;
  Fuzzer fuzzer{std::mt19937_64(argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1), {}};
  const auto start = std::chrono::steady_clock::now();
  int64_t calls = 0;
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds) {
    fuzzer.one();
    ++calls;
  }
  for (const auto& [what, n] : fuzzer.counts) std::printf("%s: %lld\n", what.c_str(), static_cast<long long>(n));
  std::printf("%lld calls, all passed\n", static_cast<long long>(calls));
  return 0;
}
