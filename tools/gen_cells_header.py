"""Regenerate csrc/fc_cells.h (the _f32/_f64 prototypes) from csrc/fc_cells_impl.h and
csrc/fc_gemm_impl.h.

Run after changing a kernel signature: python tools/gen_cells_header.py
"""
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "..", "csrc")

src = open(os.path.join(CSRC, "fc_cells_impl.h")).read()
protos = [("void", n, a) for n, a in re.findall(r"FC_CLONES void FC_SFX\((\w+)\)\(([^)]*)\)", src)]
gemm = open(os.path.join(CSRC, "fc_gemm_impl.h")).read()
protos += re.findall(r"^(void|ptrdiff_t) FC_SFX\((\w+)\)\(([^)]*)\)", gemm, re.M)
out = ["/* fc_cells.h -- prototypes of the pointwise cell kernels (contract: csrc/fc_cells_impl.h).",
       " * Generated from fc_cells_impl.h by tools/gen_cells_header.py; do not edit by hand. */",
       "#ifndef FC_CELLS_H", "#define FC_CELLS_H", "#include <stddef.h>", "#ifdef __cplusplus",
       'extern "C" {', "#endif", ""]
for ctype, sfx in (("float", "f32"), ("double", "f64")):
    for ret, name, args in protos:
        out.append(f"{ret} {name}_{sfx}({' '.join(args.split()).replace('FC_REAL', ctype)});")
    out.append("")
out += ["#ifdef __cplusplus", "}", "#endif", "#endif"]
with open(os.path.join(CSRC, "fc_cells.h"), "w") as f:
    f.write("\n".join(out) + "\n")
print(f"wrote csrc/fc_cells.h ({len(protos)} kernels x 2 types)")
