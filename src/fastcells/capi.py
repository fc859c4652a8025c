"""The fastcells C API from Python: function addresses and ctypes prototypes.

For ctypes, cffi and numba pipelines that call the compiled kernels without the Python API's
per-call overhead (validation, allocation). The functions, their arguments, status codes,
workspace and thread rules are documented in the C header ``fastcells.h``
(``fastcells.get_include()``) and in docs/embedding.md; this module reads the prototypes from
that header, so the two cannot disagree.

    import ctypes, numpy as np, fastcells.capi as capi
    size = capi.function("fc_lstm_workspace_size_f32")(T, B, I, H, 0, 1)
    fwd = capi.function("fc_lstm_forward_f32")
    status = fwd(y.ctypes.data, ..., T, B, I, H, 0, 1, n_threads)   # 0 == capi.FC_OK
    capi.check(status)                                               # raises on an error code

Every pointer argument is a ``c_void_p``: pass ``array.ctypes.data`` (or None for NULL). The
caller is responsible for shapes, dtypes and C-contiguity -- the C API cannot see them.
ctypes releases the GIL during the call, so calls from several Python threads run in parallel.
"""
import ctypes
import functools
import os
import re

from . import _kernels

__all__ = ["API_VERSION", "FC_OK", "FC_ERR_NULL", "FC_ERR_SIZE", "FC_ERR_ARG",
           "FC_ERR_WORKSPACE_SIZE", "FC_ERR_WORKSPACE_STATE", "CapiError", "addresses",
           "check", "function", "header_path", "names", "signatures", "strerror"]

FC_OK = 0
FC_ERR_NULL = -1
FC_ERR_SIZE = -2
FC_ERR_ARG = -3
FC_ERR_WORKSPACE_SIZE = -4
FC_ERR_WORKSPACE_STATE = -5


def header_path():
    """Path of the installed fastcells.h."""
    from . import get_include
    for d in get_include():
        p = os.path.join(d, "fastcells.h")
        if os.path.exists(p):
            return p
    raise FileNotFoundError("fastcells.h not found in fastcells.get_include()")


_CTYPES = {"int": ctypes.c_int, "int64_t": ctypes.c_int64}


@functools.lru_cache(maxsize=None)
def signatures():
    """{name: (return C type, [(C type, argument name), ...])} parsed from fastcells.h."""
    text = open(header_path(), encoding="utf-8").read()
    start = text.index("#define FASTCELLS_PROTOTYPES")
    body = text[start:text.index("\n\n", start)]
    body = re.sub(r"/\*.*?\*/", " ", body, flags=re.S).replace("\\\n", " ")
    out = {}
    decls = re.findall(r"FC_DECL\(\s*(\w+)\s*,\s*(\w+)_##FC_S\s*,\s*\((.*?)\)\)", body, re.S)
    if not decls:
        raise RuntimeError(f"no prototypes found in {header_path()}")
    for ctype, suffix in (("float", "f32"), ("double", "f64")):
        for ret, name, args in decls:
            params = []
            for arg in args.split(","):
                arg = " ".join(arg.replace("FC_T", ctype).replace("*", " * ").split())
                typ, _, pname = arg.rpartition(" ")
                params.append((typ.replace(" *", "*"), pname))
            out[f"fc_{name}_{suffix}"] = (ret, params)
    out["fc_strerror"] = ("const char*", [("int", "status")])
    return out


def names():
    """Names of all C API functions."""
    return sorted(signatures())


def addresses():
    """{name: address (int)} of every C API function, for ctypes/cffi/numba."""
    return dict(_kernels._capi_addresses())


def _ctype(c):
    if c.endswith("*"):
        return ctypes.c_char_p if c == "const char*" else ctypes.c_void_p
    return _CTYPES[c]


@functools.lru_cache(maxsize=None)
def function(name):
    """A ctypes function for the C API function ``name`` (pointer arguments are c_void_p)."""
    sigs = signatures()
    if name not in sigs:
        raise KeyError(f"no C API function {name!r}; see fastcells.capi.names()")
    ret, params = sigs[name]
    proto = ctypes.CFUNCTYPE(_ctype(ret), *[_ctype(t) for t, _ in params])
    return proto(addresses()[name])


def strerror(status):
    """The C API's message for a status code."""
    return function("fc_strerror")(int(status)).decode()


class CapiError(RuntimeError):
    """A C API call returned an error status (``.status``)."""

    def __init__(self, status):
        self.status = status
        super().__init__(f"{strerror(status)} (status {status})")


def check(status):
    """Raise CapiError for a negative status; return it otherwise."""
    if status < 0:
        raise CapiError(status)
    return status


def _version_info():
    return _kernels._capi_version_info()


API_VERSION = _version_info()[0]
