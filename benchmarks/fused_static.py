"""Static gate of the fused kernels' instantiations, no GPU needed: builds each (dtype, head-dim
class, arch) unit as a cubin with nvcc and, for each fused kernel in it (the forward; in float16
and bfloat16 up to class 128 also the backward and the deterministic mode's dQ kernel), reads
registers, stack and local memory (cuobjdump -res-usage), ptxas' spill report and the SASS
instruction mix (nvdisasm), and checks them against the kernel's row of `BUDGETS` in
tools/check_kernels.py (the CI gate, which builds one head-dim class only): 0 spill bytes, no
local memory, registers within budget, HMMA / LDGSTS / LDSM present. Writes the table that
`python -m jax_natten plan` reads for the forward (benchmarks/results/fused_static.json, and a .md
copy).

  python benchmarks/fused_static.py [--dtypes float16,bfloat16,float32] [--head-dims 32,64,128,256]
                                    [--archs sm_80,sm_90a] [--out benchmarks/results/fused_static.json]
                                    [--warps N --kv-rows M]   (a tile shape other than kernel.h's default)

SASS counts a kernel's instructions as the CI gate does (NOPs and never-issued "@!PT" placeholders
included); LDS counts the opcode LDS alone (ldmatrix is LDSM): the MMA operands come through
ldmatrix, so LDS are the scalar reads of the key table, and in float32 the V fragments (ldmatrix
cannot transpose 32-bit elements). "ptxas spill bytes" is ptxas' own -v report (stores + loads).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import check_kernels  # noqa: E402  (the budgets and the cubin parsing of the CI kernel gate)
SHOWN = ("HMMA", "LDGSTS", "LDSM", "LDS", "SHFL")
UNIT = ('#include "jax_natten/fused/launch.cuh"\n'
        'JAX_NATTEN_FUSED_INSTANTIATE(jax_natten::exec::DeviceLaunch, {element}, {dim})\n')
# The dtypes of CMakeLists.txt's FUSED_DTYPES: name -> the kernel's element type.
ELEMENTS = {"float16": "cute::half_t", "bfloat16": "cute::bfloat16_t", "float32": "float"}


# The fused kernels in one unit's cubin, by the kernel class in the mangled name.
KINDS = (("BackwardDqKernel", "backward_dq"), ("BackwardKernel", "backward"), ("ForwardKernel", "forward"))


def gate(dtype: str, dim: int, arch: str, work: pathlib.Path, defines=()) -> list[dict]:
    """Compiles one instantiation unit for `arch` and returns one entry per fused kernel in it (the
    forward; for 16-bit types up to class 128 also the backward and the deterministic dQ kernel),
    each checked against its row of tools/check_kernels.py's BUDGETS."""
    import cutlass_library
    import jax.ffi
    cutlass = pathlib.Path(cutlass_library.__file__).parent / "source" / "include"
    unit = work / f"fused_{dtype}_{dim}.cu"
    unit.write_text(UNIT.format(element=ELEMENTS[dtype], dim=dim))
    cubin = work / f"fused_{dtype}_{dim}_{arch}.cubin"
    started = time.monotonic()
    compiled = subprocess.run(["nvcc", "-std=c++17", "-O3", "--expt-relaxed-constexpr", f"-arch={arch}", "-cubin",
                               "-Xptxas", "-v", *defines, f"-I{REPO / 'cuda' / 'include'}", f"-I{cutlass}",
                               f"-I{jax.ffi.include_dir()}", str(unit), "-o", str(cubin)],
                              check=True, capture_output=True, text=True)
    compile_seconds = time.monotonic() - started
    spills = check_kernels.ptxas_spills(compiled.stderr)
    records = check_kernels.kernel_records(cubin, arch)
    names = check_kernels.demangle(records)
    entries = []
    for mangled, record in sorted(records.items()):
        kind = next(kind for marker, kind in KINDS if marker in mangled)
        _, failures = check_kernels.check(names[mangled], record, spills.get((mangled, arch)))
        ops = record["opcodes"]
        entries.append({"dtype": dtype, "head_dim": dim, "arch": arch, "kernel": kind, "registers": record["registers"],
                        "stack_bytes": record["stack"], "local_bytes": record["local"],
                        "spill_bytes": spills.get((mangled, arch)), "compile_seconds": round(compile_seconds, 1),
                        **{op: ops[op] for op in SHOWN}, "SASS": sum(ops.values()),
                        "failures": failures})
    return entries


def table(entries):
    """The Markdown table of gate entries."""
    lines = ["| arch | dtype | head dim | kernel | registers | stack/local bytes | ptxas spill bytes | "
             + " | ".join(SHOWN) + " | SASS | nvcc s | gate |",
             "|---|---|---|---|---|---|---|" + "---|" * len(SHOWN) + "---|---|---|"]
    lines += [f"| {e['arch']} | {e['dtype']} | {e['head_dim']} | {e['kernel']} | {e['registers']} | "
              f"{e['stack_bytes'] + e['local_bytes']} | {e['spill_bytes']} | "
              + " | ".join(str(e[op]) for op in SHOWN)
              + f" | {e['SASS']} | {e['compile_seconds']} | {'; '.join(e['failures']) or 'ok'} |" for e in entries]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", default=",".join(ELEMENTS))
    parser.add_argument("--head-dims", default="32,64,128,256")
    parser.add_argument("--archs", default="sm_80,sm_90a")
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "benchmarks" / "results" / "fused_static.json")
    parser.add_argument("--warps", type=int, help="JAX_NATTEN_FUSED_WARPS (Q tile rows: 16 per warp)")
    parser.add_argument("--kv-rows", type=int, help="JAX_NATTEN_FUSED_KV_ROWS (fewer for K/V rows over 256 bytes: kernel.h)")
    args = parser.parse_args(argv)
    defines = [f"-DJAX_NATTEN_FUSED_{name}={value}" for name, value in (("WARPS", args.warps), ("KV_ROWS", args.kv_rows))
               if value is not None]
    entries = []
    with tempfile.TemporaryDirectory() as work:
        for arch in args.archs.split(","):
            for dtype in args.dtypes.split(","):
                for dim in map(int, args.head_dims.split(",")):
                    found = gate(dtype, dim, arch, pathlib.Path(work), defines)
                    entries += found
                    print("\n".join(map(json.dumps, found)), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"kernels": entries}, indent=1) + "\n")
    lines = table(entries)
    args.out.with_suffix(".md").write_text(f"`python benchmarks/fused_static.py {' '.join(argv or sys.argv[1:])}`\n\n"
                                           + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if any(e["failures"] for e in entries) else 0


if __name__ == "__main__":
    sys.exit(main())
