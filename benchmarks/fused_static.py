"""Static gate of the fused forward's instantiations, no GPU needed: builds each (dtype, head-dim
class, arch) as a cubin with nvcc, reads registers, stack and local memory (cuobjdump
-res-usage) and the SASS instruction mix (cuobjdump -sass, nvdisasm), checks 0 spill bytes, no
local memory, registers within the budget and HMMA / LDGSTS / LDSM present, and writes the table
that `python -m jax_natten plan` reads (benchmarks/results/fused_static.json, and a .md copy).

  python benchmarks/fused_static.py [--dtypes float16,bfloat16,float32] [--head-dims 32,64,128,256]
                                    [--archs sm_80,sm_90a] [--out benchmarks/results/fused_static.json]
                                    [--warps N --kv-rows M]   (a tile shape other than kernel.h's default)

SASS counts the kernel's instructions (NOPs included, never-issued "@!PT" placeholders not), LDS
its plain shared loads: the MMA operands come through ldmatrix (LDSM), so LDS are only the
scalar reads of the key table left, and in float32 the V fragments (ldmatrix cannot transpose
32-bit elements; Q and K still come through ldmatrix). "ptxas" is ptxas' own -v report of the
cubin (registers, spill stores + loads).

"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
REGISTER_BUDGET = 255  # 128 threads a CTA: __launch_bounds__(128) allows the full file
UNIT = ('#include "jax_natten/fused/launch.cuh"\n'
        'JAX_NATTEN_FUSED_INSTANTIATE(jax_natten::exec::DeviceLaunch, {element}, {dim})\n')
# The dtypes of CMakeLists.txt's FUSED_DTYPES: name -> the kernel's element type.
ELEMENTS = {"float16": "cute::half_t", "bfloat16": "cute::bfloat16_t", "float32": "float"}


def tool(name):
    wheel = pathlib.Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
        "site-packages" / "nvidia" / "cu13" / "bin" / name
    return str(wheel) if wheel.exists() else (shutil.which(name) or name)


def gate(dtype: str, dim: int, arch: str, work: pathlib.Path, defines=()) -> dict:
    import cutlass_library
    import jax.ffi
    cutlass = pathlib.Path(cutlass_library.__file__).parent / "source" / "include"
    unit = work / f"forward_{dtype}_{dim}.cu"
    unit.write_text(UNIT.format(element=ELEMENTS[dtype], dim=dim))
    cubin = work / f"forward_{dtype}_{dim}_{arch}.cubin"
    started = time.monotonic()
    compiled = subprocess.run(["nvcc", "-std=c++17", "-O3", "--expt-relaxed-constexpr", f"-arch={arch}", "-cubin",
                               "-Xptxas", "-v", *defines, f"-I{REPO / 'cuda' / 'include'}", f"-I{cutlass}",
                               f"-I{jax.ffi.include_dir()}", str(unit), "-o", str(cubin)],
                              check=True, capture_output=True, text=True)
    compile_seconds = time.monotonic() - started
    ptxas = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads\s*\n.*?Used (\d+) registers",
                      compiled.stderr, re.S)
    env = dict(os.environ, PATH=str(pathlib.Path(tool("nvdisasm")).parent) + os.pathsep + os.environ["PATH"])
    resources = subprocess.run([tool("cuobjdump"), "-res-usage", str(cubin)], capture_output=True, text=True,
                               check=True, env=env).stdout
    sass = subprocess.run([tool("cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True, check=True,
                          env=env).stdout
    registers, stack, _, local = map(int, re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)",
                                                    resources).groups())
    # "@!PT" instructions are never issued (ptxas' scheduling placeholders, e.g. "@!PT LDS RZ, [RZ]"):
    # not counted.
    ops = collections.Counter(m.group(2).split(".")[0] for m in
                              re.finditer(r"/\*[0-9a-f]{4,}\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", sass)
                              if (m.group(1) or "").strip() != "@!PT")
    ptxas_spills = int(ptxas.group(1)) + int(ptxas.group(2))
    entry = {"dtype": dtype, "head_dim": dim, "arch": arch, "registers": registers, "stack_bytes": stack,
             "local_bytes": local, "spill_bytes": stack + local, "ptxas_spill_bytes": ptxas_spills,
             "ptxas_registers": int(ptxas.group(3)), "compile_seconds": round(compile_seconds, 1),
             "HMMA": ops["HMMA"], "LDGSTS": ops["LDGSTS"], "LDSM": ops["LDSM"], "LDS": ops["LDS"],
             "SHFL": ops["SHFL"], "SASS": sum(ops.values())}
    failures = [what for what, bad in (
        (f"{registers} registers > {REGISTER_BUDGET}", registers > REGISTER_BUDGET),
        (f"stack/local memory {stack}/{local} bytes", stack or local),
        (f"ptxas: {ptxas_spills} spill bytes", ptxas_spills),
        ("no HMMA", not ops["HMMA"]), ("no LDGSTS", not ops["LDGSTS"]), ("no LDSM", not ops["LDSM"])) if bad]
    entry["failures"] = failures
    return entry


def table(entries):
    """The Markdown table of gate entries."""
    lines = ["| arch | dtype | head dim | registers | spill/local bytes | ptxas spill bytes | HMMA | LDGSTS | LDSM | LDS | "
             "SHFL | SASS | nvcc s | gate |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {e['arch']} | {e['dtype']} | {e['head_dim']} | {e['registers']} | {e['spill_bytes']} | "
              f"{e['ptxas_spill_bytes']} | {e['HMMA']} | {e['LDGSTS']} | {e['LDSM']} | {e['LDS']} | {e['SHFL']} | "
              f"{e['SASS']} | {e['compile_seconds']} | {'; '.join(e['failures']) or 'ok'} |" for e in entries]
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
                    entries.append(gate(dtype, dim, arch, pathlib.Path(work), defines))
                    print(json.dumps(entries[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"kernels": entries}, indent=1) + "\n")
    lines = table(entries)
    args.out.with_suffix(".md").write_text(f"`python benchmarks/fused_static.py {' '.join(argv or sys.argv[1:])}`\n\n"
                                           + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if any(e["failures"] for e in entries) else 0


if __name__ == "__main__":
    sys.exit(main())
