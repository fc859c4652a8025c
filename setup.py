"""Build the compiled parts of fastcells: Cython kernels + the C pointwise cell kernels (csrc/).

Environment knobs (all optional):
  FASTCELLS_NATIVE=1     add -march=native (non-portable; the default build uses runtime dispatch)
  FASTCELLS_SANITIZE=1   build with -fsanitize=address,undefined (for the sanitizer CI step)
  FASTCELLS_NO_OPENMP=1  build without OpenMP (kernels then run single-threaded)
"""
import os
import shutil
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("csrc")
PUBLIC_HEADERS = ["fastcells.h", "fc_cells.h"]


def compile_flags():
    if sys.platform == "win32":
        return ["/O2", "/openmp"], []
    # -fno-trapping-math: values unchanged (no FP exception flags are read anywhere); without
    # it GCC will not if-convert a branch holding a division (tanh's large-|x| side) without
    # AVX-512 masks, so the AVX2 and SSE2 clones of the activations and pointwise passes stayed
    # scalar (measured on an AVX2 EPYC: sigmoid 6 ns per value).
    cflags = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-Wno-unused-function",
              "-Werror=implicit-function-declaration"]
    lflags = []
    if not os.environ.get("FASTCELLS_NO_OPENMP"):
        openmp = ["-Xpreprocessor", "-fopenmp"] if sys.platform == "darwin" else ["-fopenmp"]
        cflags += openmp
        lflags += ["-lomp"] if sys.platform == "darwin" else ["-fopenmp"]
    if os.environ.get("FASTCELLS_NATIVE"):
        cflags.append("-march=native")
    if os.environ.get("FASTCELLS_SANITIZE"):
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
        cflags += san + ["-O1", "-g"]
        lflags += san
    return cflags, lflags


CFLAGS, LFLAGS = compile_flags()
common = dict(
    include_dirs=[CSRC, np.get_include()],
    extra_compile_args=CFLAGS,
    extra_link_args=LFLAGS,
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

extensions = [
    Extension("fastcells._blas", ["src/fastcells/_blas.pyx"], **common),
    Extension("fastcells._floor", ["src/fastcells/_floor.pyx"], **common),
    Extension("fastcells._kernels", ["src/fastcells/_kernels.pyx", "csrc/fc_cells.c"],
              depends=["csrc/fc_cells.h", "csrc/fc_cells_impl.h", "csrc/fc_activations.h",
                       "csrc/fc_gemm_impl.h", "csrc/fc_ukr_impl.h",
                       "csrc/fc_sync.h", "csrc/fastcells.h", "src/fastcells/_capi.pxi",
                       "src/fastcells/capi.pxd"],
              **dict(common, define_macros=common["define_macros"]
                     + [("FASTCELLS_BUILDING_LIBRARY", "1")])),
]


class BuildPyWithHeaders(build_py):
    """Install the public C headers inside the package (fastcells/include) for get_include()."""

    def run(self):
        super().run()
        dest = os.path.join(self.build_lib, "fastcells", "include")
        os.makedirs(dest, exist_ok=True)
        for h in PUBLIC_HEADERS + ["fc_activations.h", "fc_cells_impl.h"]:
            src = os.path.join(HERE, CSRC, h)
            if os.path.exists(src):
                shutil.copy(src, dest)


setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False,
                             "cdivision": True, "initializedcheck": False},
        annotate=False,
    ),
    cmdclass={"build_py": BuildPyWithHeaders},
)
