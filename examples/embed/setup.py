"""Build the two embedding examples in place: python setup.py build_ext --inplace

Downstream code needs only fastcells.get_include(): the header directory (fastcells.h) for the
C compiler and the directory holding fastcells/capi.pxd for Cython. Nothing is linked against
fastcells, OpenMP or BLAS: the kernels stay inside the fastcells package and are reached through
the function table that import_fastcells() fetches at run time.
"""
import fastcells
from Cython.Build import cythonize
from setuptools import Extension, setup

include = fastcells.get_include()

setup(
    name="fastcells-embed-example",
    ext_modules=[
        Extension("fc_embed_c", ["fc_embed_c.c"], include_dirs=include),
        *cythonize([Extension("fc_embed_cy", ["fc_embed_cy.pyx"], include_dirs=include)],
                   include_path=include, compiler_directives={"language_level": "3"}),
    ],
)
