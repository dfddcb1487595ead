"""tools/check_kernels.py, the static gate over the compiled kernels, on canned tool output: its
parsers read what ptxas, cuobjdump and nvdisasm print, and each budget check fires."""

from __future__ import annotations

import collections
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tools"))
import check_kernels  # noqa: E402

GEMM = "_ZN10jax_natten4gemm9pn_kernelIffEEvNS_13UnfusedParamsEPKT0_S5_S5_PT_"
NAIVE = "_ZN10jax_natten5naive9nn_kernelIffEEvNS_13UnfusedParamsEPKT_PKT0_PS6_"

PTXAS_LOG = f"""\
ptxas info    : Compiling entry function '{GEMM}' for 'sm_80'
ptxas info    : Function properties for {GEMM}
    0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 96 registers, used 1 barriers, 8 bytes cumulative stack size
ptxas info    : Compiling entry function '{NAIVE}' for 'sm_90a'
ptxas info    : Function properties for {NAIVE}
    144 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
"""

RES_USAGE = f"""\
Resource usage:
 Common:
  GLOBAL:0
 Function {GEMM}:
  REG:96 STACK:0 SHARED:12288 LOCAL:0 CONSTANT[0]:904 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function {NAIVE}:
  REG:40 STACK:144 SHARED:0 LOCAL:0 CONSTANT[0]:904 TEXTURE:0 SURFACE:0 SAMPLER:0
"""

SASS = f"""\
\t.section\t.text.{GEMM},"ax",@progbits
        /*0000*/                   LDC R1, c[0x0][0x37c] ;
        /*0010*/              @!P0 LDSM.16.M88.4 R4, [R2] ;
        /*0020*/                   HMMA.16816.F32.TF32 R8, R4, R6, R8 ;
        /*0030*/               @UP0 HMMA.16816.F32.TF32 R8, R4, R6, R8 ;
        /*0040*/                   EXIT ;
\t.section\t.text.{NAIVE},"ax",@progbits
        /*0000*/                   STL [R1], R2 ;
        /*0010*/                   EXIT ;
"""


def test_parsers_read_the_tools_output():
    assert check_kernels.ptxas_spills(PTXAS_LOG) == {(GEMM, "sm_80"): 12, (NAIVE, "sm_90a"): 0}
    records = check_kernels.parse_resources(RES_USAGE, "sm_80")
    assert {k: (r["registers"], r["stack"], r["shared"]) for k, r in records.items()} == {
        GEMM: (96, 0, 12288), NAIVE: (40, 144, 0)}
    check_kernels.count_opcodes(SASS, records)
    assert records[GEMM]["opcodes"] == {"LDC": 1, "LDSM": 1, "HMMA": 2, "EXIT": 1}
    assert records[NAIVE]["opcodes"] == {"STL": 1, "EXIT": 1}


def _record(registers=96, stack=0, local=0, **opcodes):
    return {"arch": "sm_80", "registers": registers, "stack": stack, "shared": 0, "local": local,
            "opcodes": collections.Counter(opcodes)}


TILE = "jax_natten::gemm::TileConfig<64, 64, 32, 2, 2>"
GEMM_NAME = f"void jax_natten::gemm::nn_kernel<float, __half, {TILE}>(jax_natten::UnfusedParams, float const*)"
NAIVE_NAME = ("void jax_natten::naive::nn_kernel<float, float, jax_natten::naive::BlockConfig<256> >"
              "(jax_natten::UnfusedParams, float const*)")
PN_F32_NAME = f"void jax_natten::gemm::pn_kernel<float, float, {TILE}>(jax_natten::UnfusedParams, float const*)"
FUSED_NAME = ("void jax_natten::fused::forward_kernel<jax_natten::fused::ForwardKernel<"
              "jax_natten::fused::ForwardConfig<cute::half_t, 64> > >(jax_natten::fused::FusedParams)")


def test_every_budget_check_fires():
    def violations(kernel, record, spills=0):
        return check_kernels.check(kernel, record, spills)[1]

    assert violations(GEMM_NAME, _record(HMMA=4, LDSM=2)) == []
    assert violations(GEMM_NAME, _record(registers=200, HMMA=4, LDSM=2)) == ["200 registers > 128"]
    assert violations(GEMM_NAME, _record(HMMA=4, LDSM=2), spills=12) == ["12 spill bytes > 0"]
    assert violations(GEMM_NAME, _record(HMMA=4, LDSM=2), spills=None) == [
        "not in the ptxas report (the gate needs the output of a build from clean)"]
    assert violations(GEMM_NAME, _record(stack=16, HMMA=4, LDSM=2)) == ["16 B stack > 0"]
    assert violations(GEMM_NAME, _record(local=8, HMMA=4, LDSM=2)) == ["8 B local memory"]
    assert violations(GEMM_NAME, _record(HMMA=4, LDSM=2, LDL=1)) == ["1 local-memory instructions (LDL/STL)"]
    assert violations(GEMM_NAME, _record(LDS=2)) == ["no HMMA"]
    # The naive kernels' declared stack frame, and local-memory instructions with it, pass.
    assert violations(NAIVE_NAME, _record(registers=40, stack=176, STL=3)) == []
    assert violations(NAIVE_NAME, _record(registers=40, stack=192)) == ["192 B stack > 176"]
    # A recorded defect is allowed at its recorded size, on its arch only.
    assert violations(PN_F32_NAME, _record(registers=168, stack=24, HMMA=4, LDSM=2, STL=2), spills=76) == []
    assert violations(PN_F32_NAME, _record(registers=170, stack=24, HMMA=4, LDSM=2), spills=80) == [
        "170 registers > 168", "80 spill bytes > 76"]
    sm90 = dict(_record(registers=168, HMMA=4, LDSM=2), arch="sm_90a")
    assert violations(PN_F32_NAME, sm90) == ["168 registers > 128"]
    # The fused forward needs its cp.async copies too.
    assert violations(FUSED_NAME, _record(registers=230, HMMA=64, LDSM=8, LDGSTS=5)) == []
    assert violations(FUSED_NAME, _record(registers=230, HMMA=64, LDSM=8)) == ["no LDGSTS"]
    assert violations("void jax_natten::fused::fwd_kernel<float>()", _record()) == ["no row of BUDGETS covers this kernel"]
    # The fused forward: 255 registers allowed, its operands through ldmatrix required.
    fused = ("void jax_natten::fused::forward_kernel<jax_natten::fused::ForwardKernel<jax_natten::fused::Config<"
             "cute::bfloat16_t, 128, 64, 64, 4>>>(jax_natten::fused::FusedParams)")
    assert violations(fused, _record(registers=255, HMMA=4, LDSM=2, LDGSTS=2)) == []
    assert violations(fused, _record(registers=255, HMMA=4, LDS=2, LDGSTS=2)) == ["no LDSM"]


def test_short_name_drops_the_parameter_list():
    assert check_kernels.short_name(GEMM_NAME) == f"jax_natten::gemm::nn_kernel<float, __half, {TILE}>"
    assert check_kernels.short_name("f<(anonymous namespace)::T>(int)") == "f<(anonymous namespace)::T>"
    assert (check_kernels.short_name("jax_natten::(anonymous namespace)::window_bounds_kernel(jax_natten::AxisParams, int4*)")
            == "jax_natten::(anonymous namespace)::window_bounds_kernel")


def test_compare_lists_what_changed():
    def row(kernel, registers, **opcodes):
        return {"kernel": kernel, "arch": "sm_80", "registers": registers, "stack": 0, "shared": 0,
                "instructions": sum(opcodes.values()), "opcodes": opcodes}

    old = [row("a", 96, HMMA=16, LDS=80), row("b", 40, LDG=2)]
    new = [row("a", 100, HMMA=16, LDS=82), row("c", 40, LDG=2)]
    assert check_kernels.compare(old, new).splitlines() == [
        "a sm_80: registers 96 -> 100, instructions 96 -> 98, LDS 80 -> 82", "b sm_80: removed", "c sm_80: added"]
    assert check_kernels.compare(old, old) == "no differences"
