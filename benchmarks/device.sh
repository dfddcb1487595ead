#!/usr/bin/env bash
# On the lent GPU machine: build and install jax_natten from source, run the GPU tests and the
# benchmarks, and leave logs and results under $OUT. Stages run in the order given:
#   JAX_NATTEN_COMMIT=<sha> bash benchmarks/device.sh build test sanitize bench sweep train models
# (JAX_NATTEN_COMMIT goes into the result records; JAX_NATTEN_TEST_FILTER is pytest's -k.)
# The wheels the device lacks travel in .device/ (carry ".device"): CUTLASS, and scikit-learn
# for the training run:
#   bash ../shared/device/prepare.sh scikit-learn==1.9.1 joblib==1.6.0 threadpoolctl==3.8.0
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-/tmp/jax_natten_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
python3 -m pip install -q --no-index --no-deps --target /tmp/device_site "$repo"/.device/*.whl || exit 1
export PYTHONPATH=/tmp/device_site
status=0
# The GPU test files: every tests/test_*cuda*.py (naive/gemm, fused, the FFI layer).
GPU_TESTS=$(ls "$repo"/tests/test_*cuda*.py)
SANITIZE_TESTS=${JAX_NATTEN_SANITIZE_TESTS:-$GPU_TESTS}

build() {
  local start=$SECONDS
  (cd "$repo" && JAX_NATTEN_CUDA=ON JAX_NATTEN_CUDA_ARCHS=${JAX_NATTEN_CUDA_ARCHS:-90a-real} CMAKE_BUILD_PARALLEL_LEVEL=16 \
    python3 -m pip install -v --no-build-isolation --no-deps . >"$out/build.log" 2>&1) || { tail -40 "$out/build.log"; return 1; }
  echo "build: $((SECONDS - start)) s (JAX_NATTEN_CUDA_ARCHS=${JAX_NATTEN_CUDA_ARCHS:-90a-real})" | tee -a "$out/summary.txt"
}

# Tests run from /tmp so that the installed package, not the source tree, is imported.
test() {
  (cd /tmp && JAX_NATTEN_REQUIRE_GPU=1 python3 -m pytest -q -n 14 -p no:cacheprovider -p no:benchmark \
    -k "${JAX_NATTEN_TEST_FILTER:-}" $GPU_TESTS 2>&1 \
    | tee "$out/tests.log" | tail -15)
}

# compute-sanitizer: the pytest suite under memcheck crashed the host process (2026-11, jax 0.11.2).
# First the minimal program (benchmarks/sanitizer_probe.py) under each tool in four environments,
# in parallel, to see which of them the tool survives: as is; XLA's plain allocator (cudaMalloc per
# buffer instead of the BFC pool, which also lets memcheck see each buffer's bounds); plus no
# command buffers (CUDA graphs) and no autotuning; plus API errors not reported. Then memcheck,
# racecheck and synccheck over a small sweep of the GPU tests in the first environment that ran.
sanitizer_env() {  # VARIANT -> env assignments
  case $1 in
    plain) echo "" ;;
    platform) echo "XLA_PYTHON_CLIENT_ALLOCATOR=platform" ;;
    nograph) echo "XLA_PYTHON_CLIENT_ALLOCATOR=platform XLA_FLAGS=--xla_gpu_enable_command_buffer=,--xla_gpu_autotune_level=0" ;;
    noapi) echo "XLA_PYTHON_CLIENT_ALLOCATOR=platform XLA_FLAGS=--xla_gpu_enable_command_buffer=,--xla_gpu_autotune_level=0 NOAPI=1" ;;
  esac
}
sanitize() {
  local variants="plain platform nograph noapi" tools="memcheck racecheck synccheck" chosen=""
  for variant in $variants; do
    for tool in $tools; do
      (cd /tmp && env $(sanitizer_env $variant | sed 's/NOAPI=1//') timeout 200 compute-sanitizer --tool $tool \
        $([ $variant = noapi ] && echo --report-api-errors no) --error-exitcode 9 \
        python3 "$repo/benchmarks/sanitizer_probe.py" --backend gemm --grad \
        >"$out/sanitize-probe-$variant-$tool.log" 2>&1; echo "$variant $tool exit $?" >"$out/sanitize-probe-$variant-$tool.rc") &
    done
  done
  wait
  for variant in $variants; do
    for tool in $tools; do
      echo "probe $(cat "$out/sanitize-probe-$variant-$tool.rc"): $(grep -m1 -E 'ERROR SUMMARY|sanitizer_probe|Segmentation|Error' "$out/sanitize-probe-$variant-$tool.log")" | tee -a "$out/summary.txt"
    done
    [ -z "$chosen" ] && grep -q "exit 0" "$out/sanitize-probe-$variant-memcheck.rc" && chosen=$variant
  done
  tar czf "$out/sanitize-probe-logs.tgz" -C "$out" $(cd "$out" && ls sanitize-probe-*) && rm -f "$out"/sanitize-probe-*.log "$out"/sanitize-probe-*.rc
  [ -n "$chosen" ] || { echo "compute-sanitizer ran the probe in no environment" | tee -a "$out/summary.txt"; return 1; }
  echo "sanitizer environment: $chosen ($(sanitizer_env $chosen))" | tee -a "$out/summary.txt"
  for tool in $tools; do
    (cd /tmp && env $(sanitizer_env $chosen | sed 's/NOAPI=1//') JAX_NATTEN_REQUIRE_GPU=1 JAX_NATTEN_GPU_CHUNKS=1 JAX_NATTEN_GPU_SWEEP=2 \
      timeout 240 compute-sanitizer --tool $tool $([ $chosen = noapi ] && echo --report-api-errors no) --error-exitcode 9 \
      python3 -m pytest -q -x -p no:cacheprovider $SANITIZE_TESTS -k "${JAX_NATTEN_SANITIZE_FILTER:-matches_reference}" \
      >"$out/sanitizer-$tool.log" 2>&1; echo "compute-sanitizer $tool over the GPU tests: exit $?" | tee -a "$out/summary.txt") &
  done
  wait
  for tool in $tools; do tail -3 "$out/sanitizer-$tool.log"; done
}

bench() {
  local date device
  date=$(date +%F)
  device=$(python3 -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '-'))")
  for problem in 2d-nat 2d-dinat; do
    (cd /tmp && python3 -m jax_natten bench --problem "$problem" --backends gemm,naive,reference --reps 20 \
      --json "$out/$date-$device-unfused.json") 2>&1 | tail -9
  done
}

# Every standard problem of BENCHMARKS.md, bf16, forward and forward+backward, against cuDNN dense
# attention in the same run. The float64 reference check is skipped on the large problems (it
# takes minutes there); the GPU tests check every backend's numbers instead.
standard() {
  local date device
  date=$(date +%F)
  device=$(python3 -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '-'))")
  for problem in ${JAX_NATTEN_PROBLEMS:-1d-long 1d-long-causal 2d-large 2d-dilated 3d-video 3d-video-tcausal 2d-nat 2d-dinat}; do
    (cd /tmp && timeout 300 python3 -m jax_natten bench --problem "$problem" --backends "${JAX_NATTEN_BACKENDS:-gemm,blocked}" \
      --reps 10 --no-check --json "$out/$date-$device-standard.json") 2>&1 | tail -6
  done
}

sweep() {
  local date device
  date=$(date +%F)
  device=$(python3 -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '-'))")
  (cd /tmp && python3 -m jax_natten sweep --backends gemm,naive --reps 5 --warmup 1 \
    --json "$out/$date-$device-gemm-over-naive.json") 2>&1 | tail -12
}

# The digits training run of examples/train_digits.py on the GPU (automatic backend choice).
train() {
  local date device
  date=$(date +%F)
  device=$(python3 -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '-'))")
  (cd /tmp && python3 "$repo/examples/train_digits.py" --json "$out/$date-$device-train-digits.json" \
    --plot "$out/$date-$device-train-digits.png") 2>&1 | tail -14
}

# Model-level throughput (the seed paper's Tables 5 to 8): 224x224, batch 128.
models() {
  local date device
  date=$(date +%F)
  device=$(python3 -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '-'))")
  (cd /tmp && python3 -m jax_natten models --models nat_mini,nat_tiny,dinat_tiny,dinat_small,dinat_base,dinat_large \
    --backends ${JAX_NATTEN_MODEL_BACKENDS:-gemm,naive,reference} --dtypes bfloat16,float32 --batch 128 \
    --json "$out/$date-$device-models.json") 2>&1 | tail -60
}

for stage in "$@"; do
  echo "== $stage"
  "$stage" || status=1
done
exit $status
