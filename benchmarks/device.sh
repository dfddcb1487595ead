#!/usr/bin/env bash
# On the lent GPU machine: build and install jax_natten from source, run the GPU tests and the
# benchmarks, and leave logs and results under $OUT. Stages run in the order given:
#   JAX_NATTEN_COMMIT=<sha> bash benchmarks/device.sh build test sanitize bench sweep train models
# (fused forward: stages fused_test fused_sanitize fused_bench fused_sweep profile; float32: float32_sweep)
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
  (cd /tmp && JAX_NATTEN_REQUIRE_GPU=1 python3 -m pytest -q -n ${JAX_NATTEN_TEST_WORKERS:-14} -p no:cacheprovider -p no:benchmark \
    -k "${JAX_NATTEN_TEST_FILTER:-}" $GPU_TESTS 2>&1 \
    | tee "$out/tests.log" | tail -15)
}

# compute-sanitizer. Seen on an H200 (2026-12-01, jax 0.11.2, driver 580.159): the minimal program
# benchmarks/sanitizer_probe.py (PN with RPB, NN and IN, forward and backward, through jax) runs
# clean under memcheck, racecheck and synccheck, with XLA's BFC allocator or its plain one; the
# pytest sweep under the same tool segfaults the process after two tests (2026-12-07, H100: also with
# pytest's plugin autoloading off, and under synccheck; see sanitize_diag). So the probe runs first
# (the tool works, and our kernels are clean on it), then the pytest sweep in three variants in
# parallel, to find what pytest adds: as is; without pytest's faulthandler (which installs its own
# SIGSEGV/SIGBUS handlers); and with XLA's command buffers (CUDA graphs) off. Logs under $OUT.
sanitize_variant() {  # VARIANT TOOL LOG
  local flags="" env_vars=""
  case $1 in
    nofaulthandler) flags="-p no:faulthandler" ;;
    nograph) env_vars="XLA_FLAGS=--xla_gpu_enable_command_buffer=" ;;
  esac
  (cd /tmp && env $env_vars JAX_NATTEN_REQUIRE_GPU=1 JAX_NATTEN_GPU_CHUNKS=1 JAX_NATTEN_GPU_SWEEP=2 \
    timeout ${SANITIZE_TIMEOUT:-240} compute-sanitizer --tool $2 --error-exitcode 9 \
    python3 -m pytest -q -x -p no:cacheprovider $flags $SANITIZE_TESTS -k "${JAX_NATTEN_SANITIZE_FILTER:-matches_oracle}" \
    >"$3" 2>&1; echo "compute-sanitizer $2 ($1) over the GPU tests: exit $?" | tee -a "$out/summary.txt")
}
sanitize() {
  for tool in memcheck racecheck synccheck; do
    (cd /tmp && timeout 200 compute-sanitizer --tool $tool --error-exitcode 9 python3 "$repo/benchmarks/sanitizer_probe.py" \
      --backend ${SANITIZE_BACKEND:-gemm} --grad >"$out/sanitize-probe-$tool.log" 2>&1
     echo "compute-sanitizer $tool, probe: exit $? $(grep -m1 'ERROR SUMMARY' "$out/sanitize-probe-$tool.log")" | tee -a "$out/summary.txt") &
  done
  for variant in plain nofaulthandler nograph; do
    sanitize_variant $variant memcheck "$out/sanitizer-memcheck-$variant.log" &
  done
  wait
  for variant in plain nofaulthandler nograph; do tail -3 "$out/sanitizer-memcheck-$variant.log"; done
}

# Why compute-sanitizer crashes pytest but not the probe: pytest loads every installed plugin
# (entry points "pytest11") at start, and the device image holds many. Each plugin's module is
# imported alone under memcheck, then pytest itself with and without plugin autoloading; last, the
# GPU sweep under each of the three tools with autoloading off. One line per run in summary.txt.
sanitize_diag() {
  local plugins module
  plugins=$(python3 -c "from importlib.metadata import entry_points
print(' '.join(sorted({e.name + '=' + e.value.split(':')[0] for e in entry_points(group='pytest11')})))")
  echo "pytest11 plugins: $plugins" | tee -a "$out/summary.txt"
  mkdir -p "$out/diag"
  for entry in $plugins "pytest=pytest" "jax=jax" "torch=torch"; do
    module=${entry#*=}
    (cd /tmp && timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -c "import $module" \
      >"$out/diag/import-${entry%%=*}.log" 2>&1
     echo "memcheck: import $module (${entry%%=*}): exit $?" | tee -a "$out/summary.txt") &
  done
  for disable in "" 1; do
    (cd /tmp && PYTEST_DISABLE_PLUGIN_AUTOLOAD=$disable timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 \
      python3 -m pytest --version >"$out/diag/pytest-version-noautoload$disable.log" 2>&1
     echo "memcheck: pytest --version, PYTEST_DISABLE_PLUGIN_AUTOLOAD='$disable': exit $?" | tee -a "$out/summary.txt") &
  done
  wait
  for tool in memcheck racecheck synccheck; do
    (cd /tmp && PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 JAX_NATTEN_REQUIRE_GPU=1 JAX_NATTEN_GPU_CHUNKS=1 JAX_NATTEN_GPU_SWEEP=2 \
      timeout ${SANITIZE_TIMEOUT:-300} compute-sanitizer --tool $tool --error-exitcode 9 \
      python3 -m pytest -q -x -p no:cacheprovider $SANITIZE_TESTS -k "${JAX_NATTEN_SANITIZE_FILTER:-matches_oracle}" \
      >"$out/diag/pytest-$tool-noautoload.log" 2>&1
     echo "compute-sanitizer $tool over the GPU tests, plugin autoload off: exit $? $(grep -m1 'ERROR SUMMARY\|RACECHECK SUMMARY' \
       "$out/diag/pytest-$tool-noautoload.log") $(grep -E -m1 '[0-9]+ (passed|failed)' "$out/diag/pytest-$tool-noautoload.log")" \
       | tee -a "$out/summary.txt") &
  done
  wait
}

# The GPU oracle tests one per process under each tool (sanitize_diag: a second test in one process
# crashes the tool's run), 8 processes at a time; one line per test and tool in summary.txt. XLA's
# plain allocator gives each buffer its own cudaMalloc, so memcheck sees every buffer's bounds (inside
# the BFC allocator's pool, an overrun into a neighbouring buffer is invisible to it).
sanitize_per_test() {
  local tests
  tests=$(cd /tmp && JAX_NATTEN_GPU_CHUNKS=1 python3 -m pytest -q --collect-only -p no:cacheprovider $SANITIZE_TESTS \
    -k "${JAX_NATTEN_SANITIZE_FILTER:-matches_oracle}" 2>/dev/null | grep '::' | sed "s|^|$repo/|")
  mkdir -p "$out/per_test"
  for tool in memcheck racecheck synccheck; do
    for test in $tests; do
      echo "$tool $test"
    done
  done | xargs -P ${SANITIZE_PROCESSES:-8} -L 1 bash -c 'cd /tmp && log="'"$out"'/per_test/$0-$(echo "$1" | tr -c "A-Za-z0-9_.-" _).log"
    JAX_NATTEN_REQUIRE_GPU=1 JAX_NATTEN_GPU_CHUNKS=1 JAX_NATTEN_GPU_SWEEP=2 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 \
      XLA_PYTHON_CLIENT_ALLOCATOR=platform timeout ${SANITIZE_TIMEOUT:-300} compute-sanitizer --tool $0 --error-exitcode 9 \
      python3 -m pytest -q -p no:cacheprovider "$1" >"$log" 2>&1
    echo "compute-sanitizer $0 $1: exit $? $(grep -m1 "ERROR SUMMARY\|RACECHECK SUMMARY" "$log")" >>"'"$out"'/summary.txt"'
  grep -c ": exit 0" "$out/summary.txt"
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

fused_test() {
  (cd /tmp && JAX_NATTEN_REQUIRE_GPU=1 python3 -m pytest -q -p no:cacheprovider -p no:benchmark \
    "$repo/tests/test_fused_cuda.py" 2>&1 | tee "$out/fused_tests.log" | tail -15)
}

# compute-sanitizer over the fused kernels: memcheck (out-of-bounds gathers at tile edges),
# racecheck (shared-memory hazards: the K/V stage barriers), synccheck (barriers in divergent code).
# The probe (one fused forward and backward, float16 and bfloat16) first, under each tool in parallel.
fused_sanitize() {
  local tool dtype
  for tool in memcheck racecheck synccheck; do
    for dtype in float16 bfloat16; do
      (cd /tmp && timeout 200 compute-sanitizer --tool $tool --error-exitcode 9 python3 "$repo/benchmarks/sanitizer_probe.py" \
        --backend fused --attention --grad --dtype $dtype >"$out/fused-sanitize-probe-$tool-$dtype.log" 2>&1
       echo "compute-sanitizer $tool, fused probe $dtype: exit $? $(grep -m1 'ERROR SUMMARY' "$out/fused-sanitize-probe-$tool-$dtype.log")" \
         | tee -a "$out/summary.txt") &
    done
  done
  wait
  [ -n "${JAX_NATTEN_FUSED_SANITIZE_PYTEST:-}" ] || return 0
  for tool in memcheck racecheck synccheck; do
    (cd /tmp && JAX_NATTEN_REQUIRE_GPU=1 timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 9 \
      python3 -m pytest -q -x -p no:cacheprovider "$repo/tests/test_fused_cuda.py" -k "sweep and bfloat16" \
      >"$out/fused_sanitizer_$tool.log" 2>&1
     echo "compute-sanitizer $tool (fused) exit $?" | tee -a "$out/summary.txt"; tail -5 "$out/fused_sanitizer_$tool.log")
  done
}

# The standard problems of BENCHMARKS.md, fused against gemm and dense attention (cuDNN), in each
# of JAX_NATTEN_BENCH_DTYPES (default bfloat16; also float16, float32).
fused_bench() {
  local date device problem dtype
  date=$(date +%F)
  device=$(python3 -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '-'))")
  for dtype in ${JAX_NATTEN_BENCH_DTYPES:-bfloat16}; do
    for problem in ${JAX_NATTEN_PROBLEMS:-1d-long 1d-long-causal 2d-large 2d-dilated 3d-video 3d-video-tcausal 2d-nat 2d-dinat}; do
      (cd /tmp && python3 -m jax_natten bench --problem "$problem" --dtype "$dtype" \
        --backends "${JAX_NATTEN_BACKENDS:-fused,gemm}" --passes "${JAX_NATTEN_PASSES:-fwd}" --reps 20 \
        ${JAX_NATTEN_BENCH_FLAGS:-} --json "$out/$date-$device-fused.json") 2>&1 | tail -6
    done
  done
  (cd /tmp && python3 -m jax_natten plan --json "$out/$date-fused-plan.json") 2>&1 | tail -8
}

# The seed paper's comparison: fused over naive and fused over gemm, forward, float16.
fused_sweep() {
  local date device baseline
  date=$(date +%F)
  device=$(python3 -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '-'))")
  for baseline in naive gemm; do
    (cd /tmp && python3 -m jax_natten sweep --backends fused,$baseline --dtypes float16,bfloat16 --passes fwd \
      --reps 5 --warmup 1 --json "$out/$date-$device-fused-over-$baseline.json") 2>&1 | tail -8
  done
}

# The seed's float32 comparison (issue [7/9]'s missing ranks): fused, gemm and naive, forward and
# forward+backward, one record file per rank (JAX_NATTEN_SWEEP_RANKS, default 1 2 3).
float32_sweep() {
  local date device rank
  date=$(date +%F)
  device=$(python3 -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '-'))")
  for rank in ${JAX_NATTEN_SWEEP_RANKS:-1 2 3}; do
    (cd /tmp && python3 -m jax_natten sweep --backends fused,gemm,naive --dtypes float32 --rank "$rank" \
      --passes fwd,fwd+bwd --reps 5 --warmup 1 --json "$out/$date-$device-sweep-float32-${rank}d.json") 2>&1 | tail -8
  done
}

# Nsight Compute over one launch of the fused forward per problem (full section set; clocks left
# alone as METHOD.md asks); the backward with JAX_NATTEN_PROFILE_KERNEL=backward_kernel
# JAX_NATTEN_PROFILE_PASSES=fwd+bwd. Reports and their text pages under $OUT.
profile() {
  local problem
  for problem in ${JAX_NATTEN_PROFILE_PROBLEMS:-2d-large 2d-nat}; do
    (cd /tmp && timeout ${PROFILE_TIMEOUT:-240} ncu --clock-control none --target-processes all \
      --kernel-name "regex:${JAX_NATTEN_PROFILE_KERNEL:-forward_kernel}" --launch-skip 1 --launch-count 1 --set full \
      -o "$out/profile-$problem" python3 -m jax_natten bench --problem "$problem" \
      --backends "${JAX_NATTEN_PROFILE_BACKEND:-fused}" --passes "${JAX_NATTEN_PROFILE_PASSES:-fwd}" --reps 1 --warmup 1 --no-check \
      >"$out/profile-$problem.log" 2>&1
     echo "ncu $problem: exit $?" | tee -a "$out/summary.txt"
     ncu --import "$out/profile-$problem.ncu-rep" --page details >"$out/profile-$problem.txt" 2>&1
     grep -E "Duration|Registers Per|Achieved Occupancy|Compute \(SM\) Throughput|Memory Throughput|Shared Memory|Bank" \
       "$out/profile-$problem.txt" | head -20)
  done
}

# The digits training run of examples/train_digits.py on the GPU (automatic backend choice, or
# JAX_NATTEN_TRAIN_BACKEND, e.g. fused for [8/9]'s run).
train() {
  local date device
  date=$(date +%F)
  device=$(python3 -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '-'))")
  local backend=${JAX_NATTEN_TRAIN_BACKEND:+--backend $JAX_NATTEN_TRAIN_BACKEND}
  local name=train-digits${JAX_NATTEN_TRAIN_BACKEND:+-$JAX_NATTEN_TRAIN_BACKEND}
  (cd /tmp && python3 "$repo/examples/train_digits.py" $backend --json "$out/$date-$device-$name.json" \
    --plot "$out/$date-$device-$name.png") 2>&1 | tail -14
}

# Model-level throughput (the seed paper's Tables 5 to 8): each model at its own resolution (224x224;
# dinat_large_384 at 384x384), batch 128, every backend of [8/9] and dense attention in one run per model.
models() {
  local date device
  date=$(date +%F)
  device=$(python3 -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '-'))")
  (cd /tmp && python3 -m jax_natten models --models ${JAX_NATTEN_MODELS:-nat_mini,nat_tiny,dinat_tiny,dinat_small,dinat_base,dinat_large,dinat_large_384} \
    --backends ${JAX_NATTEN_MODEL_BACKENDS:-fused,gemm,blocked,naive,reference} --dtypes ${JAX_NATTEN_MODEL_DTYPES:-bfloat16,float32} --batch 128 --breakdown \
    --json "$out/$date-$device-models.json") 2>&1 | tail -60
}

for stage in "$@"; do
  echo "== $stage"
  "$stage" || status=1
done
exit $status
