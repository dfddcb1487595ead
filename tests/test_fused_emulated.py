"""The fused forward kernel's own source run on the CPU through the host emulation
(cuda/include/jax_natten/exec/), against a float64 evaluation of the neighborhood rule, over
random cases of every parameter class at small sizes, outputs poisoned; the smem race shadow and
ThreadSanitizer over small sweeps; and mutants that these runs must catch."""

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


def test_race_shadow_clean():
    done = emu.run(emu.build(emu.SHADOW_FLAGS + emu.ONE_CLASS), 6, seed=2)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "races" not in done.stderr
    assert {d for d, *_ in _summary(done.stdout)} == ONE_CLASS_DTYPES


def test_thread_sanitizer_clean():
    done = emu.run(emu.build(emu.TSAN_FLAGS + emu.ONE_CLASS, optimize="-O1"), 2, seed=3, lanes="threads")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "ThreadSanitizer" not in done.stderr
    assert {d for d, *_ in _summary(done.stdout)} == ONE_CLASS_DTYPES


# Not among them: the barrier before the next loads. The emulation lands a cp.async at its wait,
# which here comes after the next iteration's barrier, so dropping that barrier is harmless
# on the host; on the GPU a copy may land as soon as it is issued (compute-sanitizer racecheck
# in benchmarks/device.sh covers it).
MUTANTS = {
    # The barrier after the K/V loads: warps read K/V that other warps have not landed yet. The
    # reads are ldmatrix's, so this also shows that the shadow sees them.
    "dropped barrier after the loads": (
        "fused/mainloop.h", "ctx.sync_threads();               // ... and every other thread's", "", "shadow"),
    # Waiting for one group too few: KV tile j is still in flight when it is read.
    "missing cp.async wait": ("fused/mainloop.h", "ctx.template cp_async_wait<1>();", "ctx.template cp_async_wait<2>();",
                              "plain"),
    # The KV box one key short: the last key of the union of the windows is never visited.
    "off-by-one KV tile range": ("fused/scheduler.h", "at.kv_end = last.end;", "at.kv_end = last.end - 1;", "plain"),
    # ldmatrix hands each lane its neighbour's fragment: Q, K and V^T reach the wrong MMA lanes.
    "wrong ldmatrix fragment mapping": (
        "exec/host_ldsm.h", "return typename Traits::DstLayout{}(lane, bit);",
        "return typename Traits::DstLayout{}(lane ^ 1, bit);", "plain"),
}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_caught(name, tmp_path):
    edit_file, old, new, mode = MUTANTS[name]
    include = emu.mutate(edit_file, old, new, tmp_path)
    flags = emu.ONE_CLASS + (emu.SHADOW_FLAGS if mode == "shadow" else ())
    done = emu.run(emu.build(flags, include=include), 6, seed=4)
    caught = done.returncode != 0 and ("FAILED" in done.stdout or "races" in done.stderr)
    assert caught, f"mutant {name!r} not caught:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"


def test_cta_past_2_to_31_elements():
    # Only the last CTAs of the last head run, over mmap'd tensors of 2^31 + 2^22... elements.
    done = emu.run(emu.build(), 0, lanes="big")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "big tensor float16:" in done.stdout and "big tensor float32:" in done.stdout
