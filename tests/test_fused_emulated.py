"""The fused forward and backward kernels' own source run on the CPU through the host emulation
(cuda/include/jax_natten/exec/), against a float64 evaluation of the neighborhood rule, over
random cases of every parameter class at small sizes, outputs poisoned; the smem race shadow and
ThreadSanitizer (the backward's dQ atomics emulated as atomics) over small sweeps of both; and
mutants that these runs must catch."""

from __future__ import annotations

import os
import re

import fused_emulation as emu
import pytest

from jax_natten import fused_plan

REASON = emu.unavailable_reason()
REQUIRED = "1" in (os.environ.get("JAX_NATTEN_REQUIRE_EXTENSION"), os.environ.get("JAX_NATTEN_REQUIRE_EMULATION"))
if REASON is not None and REQUIRED:
    raise RuntimeError(f"the fused emulation tests must run here (JAX_NATTEN_REQUIRE_EXTENSION or "
                       f"JAX_NATTEN_REQUIRE_EMULATION is 1): {REASON}")
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"fused emulation: {REASON}")

CASES_PER_DTYPE = int(os.environ.get("JAX_NATTEN_FUSED_EMU_CASES", "300"))


def _summary(output):
    return re.findall(r"^(\w+) head_dim class (\d+): (\d+) cases, (\d+) failed", output, re.M)


@pytest.mark.slow
def test_emulated_sweep_matches_float64():
    done = emu.run(emu.build(), CASES_PER_DTYPE)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = _summary(done.stdout)
    for dtype in fused_plan.DTYPES:
        cases = sum(int(n) for d, _, n, failed in summary if d == dtype)
        assert cases >= CASES_PER_DTYPE, summary
        assert {int(c) for d, c, _, _ in summary if d == dtype} == {32, 64, 128, 256}
    assert all(failed == "0" for *_, failed in summary)


# The one-class builds run float16 and float32 (the two MMA paths) at head-dim class 64.
ONE_CLASS_DTYPES = {"float16", "float32"}




def _backward_summary(output, deterministic=False):
    """{(dtype, head-dim class): cases} of the backward sweeps' summary lines with 0 failures."""
    mode = r" \(deterministic\)" if deterministic else ""
    return {(d, int(c)): int(n) for d, c, n in
            re.findall(rf"^backward{mode} (\w+) head_dim class (\d+): (\d+) cases, 0 failed", output, re.M)}


def _every_class(cases):
    """The summary of a backward run of `cases` per dtype on the build of every class: float16
    and bfloat16, a third of the cases at each of head-dim classes 32, 64 and 128."""
    third = cases // 3
    per_class = ((32, third), (64, third), (128, cases - 2 * third))
    return {(dtype, c): n for dtype in ("float16", "bfloat16") for c, n in per_class}


def _one_class(cases):
    """The summary of a backward run of `cases` on a one-class build (float16 at class 64)."""
    return {("float16", 64): cases}


@pytest.mark.slow
def test_race_shadow_clean():
    binary = emu.build(emu.SHADOW_FLAGS + emu.ONE_CLASS)
    done = emu.run(binary, 6, seed=2)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "races" not in done.stderr
    assert {d for d, *_ in _summary(done.stdout)} == ONE_CLASS_DTYPES
    done = emu.run(binary, 3, seed=2, backward=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "races" not in done.stderr and _backward_summary(done.stdout) == _one_class(3)
    done = emu.run(binary, 2, seed=2, backward=True, deterministic=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "races" not in done.stderr and _backward_summary(done.stdout, deterministic=True) == _one_class(2)


@pytest.mark.slow
def test_thread_sanitizer_clean():
    binary = emu.build(emu.TSAN_FLAGS + emu.ONE_CLASS, optimize="-O1")
    done = emu.run(binary, 2, seed=3, lanes="threads")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "ThreadSanitizer" not in done.stderr
    assert {d for d, *_ in _summary(done.stdout)} == ONE_CLASS_DTYPES
    # One case on OS threads: the backward's CPU time varies 5x with the drawn shape; seed 4's
    # (drawn with rng() % n only, the same everywhere) takes about 20 s under TSan.
    done = emu.run(binary, 1, seed=4, lanes="threads", backward=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "ThreadSanitizer" not in done.stderr and _backward_summary(done.stdout) == _one_class(1)


@pytest.mark.slow
def test_backward_matches_float64():
    # CASES_PER_DTYPE random cases of every parameter class but RPB in float16 and in bfloat16,
    # over every backward instantiation (head-dim classes 32, 64 and 128), on the build of every class.
    done = emu.run(emu.build(), CASES_PER_DTYPE, seed=5, backward=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert _backward_summary(done.stdout) == _every_class(CASES_PER_DTYPE), done.stdout[-2000:]


@pytest.mark.slow
def test_deterministic_backward_keeps_its_bits_and_matches_float64():
    # dQ from the Q-tile kernel (d_query poisoned), each case run 3 times with the same bits.
    done = emu.run(emu.build(emu.ONE_CLASS), 20, seed=7, backward=True, deterministic=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert _backward_summary(done.stdout, deterministic=True) == _one_class(20), done.stdout[-2000:]


@pytest.mark.slow
def test_deterministic_backward_every_class_matches_float64():
    # The deterministic mode at every backward instantiation (head-dim classes 32, 64 and 128) in
    # float16 and bfloat16, on the build of every class.
    done = emu.run(emu.build(), 18, seed=6, backward=True, deterministic=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert _backward_summary(done.stdout, deterministic=True) == _every_class(18), done.stdout


# Not among them: the barrier before the next loads. The emulation lands a cp.async at its wait,
# which here comes after the next iteration's barrier, so dropping that barrier is harmless
# on the host; on the GPU a copy may land as soon as it is issued (compute-sanitizer racecheck
# in benchmarks/device.sh covers it).
MUTANTS = {  # name: (file, old, new, build, run the backward: False, True or "deterministic")
    # The barrier after the K/V loads: warps read K/V that other warps have not landed yet. The
    # reads are ldmatrix's, so this also shows that the shadow sees them.
    "dropped barrier after the loads": (
        "fused/mainloop.h", "ctx.sync_threads();               // ... and every other thread's", "", "shadow", False),
    # Waiting for one group too few: KV tile j is still in flight when it is read.
    "missing cp.async wait": ("fused/mainloop.h", "ctx.template cp_async_wait<1>();", "ctx.template cp_async_wait<2>();",
                              "plain", False),
    # The KV box one key short: the last key of the union of the windows is never visited.
    "off-by-one KV tile range": ("fused/scheduler.h", "at.kv_end = last.end;", "at.kv_end = last.end - 1;", "plain", False),
    # ldmatrix hands each lane its neighbour's fragment: Q, K and V^T reach the wrong MMA lanes.
    "wrong ldmatrix fragment mapping": (
        "exec/host_ldsm.h", "return typename Traits::DstLayout{}(lane, bit);",
        "return typename Traits::DstLayout{}(lane ^ 1, bit);", "plain", False),
    # Backward: dV, dK and dQ read P and dS before every warp has written its part to shared memory.
    "backward: dropped barrier before the P and dS products": (
        "fused/backward.h", "ctx.sync_threads();  // P and dS are in shared memory", "", "shadow", True),
    # Backward: the KV tile's entries (key coordinates and tokens) read before threads 0..BK-1
    # have written them.
    "backward: dropped barrier after the KV tile's entries": (
        "fused/backward.h", "ctx.sync_threads();  // the KV tile's entries are in shared memory", "", "shadow", True),
    # Backward: dS = P dP, without the delta term (rowsum(dO * O) - dLSE).
    "backward: wrong delta": (
        "fused/backward.h", "(acc_dp(i) - smem.delta[query])", "acc_dp(i)",
        "plain", True),
    # Deterministic dQ: warps read K/V that other warps have not landed yet.
    "deterministic dQ: dropped barrier after the loads": (
        "fused/backward_dq.h", "ctx.sync_threads();               // ... and every other thread's", "", "shadow",
        "deterministic"),
    # Deterministic dQ: dS = P dP, without delta.
    "deterministic dQ: wrong delta": (
        "fused/backward_dq.h", "(dp_rc(r, c) - delta[r])", "dp_rc(r, c)", "plain", "deterministic"),
    # Backward: the inverse neighborhood one Q tile short along every axis.
    "backward: Q tile missing from the inverse range": (
        "fused/backward.h", "ceil_div(last.end, p.q_tile[a]) - at.q_tile_first : 0;",
        "ceil_div(last.end, p.q_tile[a]) - at.q_tile_first - 1 : 0;", "plain", True),
}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_caught(name, tmp_path):
    edit_file, old, new, mode, backward = MUTANTS[name]
    include = emu.mutate(edit_file, old, new, tmp_path)
    flags = emu.ONE_CLASS + (emu.SHADOW_FLAGS if mode == "shadow" else ())
    done = emu.run(emu.build(flags, include=include), 6, seed=4, backward=bool(backward),
                   deterministic=backward == "deterministic")
    caught = done.returncode != 0 and ("FAILED" in done.stdout or "races" in done.stderr)
    assert caught, f"mutant {name!r} not caught:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"


def test_cta_past_2_to_31_elements():
    # Only the last CTAs of the last head run, over mmap'd tensors of 2^31 + 2^22... elements.
    done = emu.run(emu.build(), 0, lanes="big")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "big tensor float16:" in done.stdout and "big tensor float32:" in done.stdout
