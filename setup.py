"""Builds fastad's Cython kernels (csrc/*.pyx, into the package fastad.kernels), and
compiles the tape's plain-Python modules (TAPE_MODULES: fastad/core and fastad/ops) with
Cython too.

The tape modules stay ordinary Python source; compiled, they run the same code with
about a third less interpreter overhead per recorded op (bench/tiny_ops.py), and the
`.pxd` file beside each declares its extension types and the helpers other compiled
modules call in C. Generated C goes to build/cython (build/debug/cython for the debug
build), never beside the sources. Python imports a compiled module in preference to its
.py file: in a source checkout, `import fastad` refuses a compiled module older than its
.py (rebuild with `python setup.py build_ext --inplace -j 2`), and FASTAD_PURE_PYTHON=1
at build time leaves the tape interpreted while you work on it.

FASTAD_DEBUG=1 at build time makes the debug build (the debug CI stage tests it):
Cython's bounds, wraparound and initialization checks on, and the kernels compiled and
linked with AddressSanitizer. The kernels work on raw pointers, which Cython's checks
never see; ASan puts poisoned zones around every heap block, so a kernel that reads or
writes past an array aborts with a report naming the kernel and the source line. The
interpreter is not instrumented, so the sanitizer runtime must be preloaded:

    FASTAD_DEBUG=1 pip install ".[test]"
    LD_PRELOAD=$(gcc -print-file-name=libasan.so) \
        ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 pytest

(Without the preload, importing the debug build fails with "ASan runtime does not come
first in initial library list".) The debug build keeps its generated C and objects
under build/debug/, apart from the release build's. After an in-place debug build
(`FASTAD_DEBUG=1 python setup.py build_ext --inplace`), rebuild the release one with
`--force`: the in-place module is newer than the sources, so setuptools would keep it.
"""
import os
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup


def flag(name):
    return os.environ.get(name, "") not in ("", "0")


DEBUG = flag("FASTAD_DEBUG")
# The debug build leaves the tape interpreted: exact tracebacks, and CI tests both forms.
PURE_PYTHON = DEBUG or flag("FASTAD_PURE_PYTHON")
TAPE_MODULES = [f"fastad/core/{name}.py" for name in ("modes", "tensor", "operands",
                                                      "tape", "sweep", "gradients",
                                                      "buffers", "clock")] + [
    f"fastad/ops/{name}.py" for name in ("protocol", "arithmetic", "elementwise", "softmax",
                                         "losses", "linalg", "reductions", "shapes",
                                         "indexing")]
BUILD = "build/debug" if DEBUG else "build"
JOBS = os.cpu_count() or 1

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
}
SANITIZE = ["-fsanitize=address", "-fno-omit-frame-pointer"]
# Release: -g0 overrides the -g in Python's own CFLAGS, which would put DWARF debug info
# (most of each module's size) into every wheel.
compile_args = ["-O1", "-g", *SANITIZE] if DEBUG else ["-O3", "-g0"]
link_args = SANITIZE if DEBUG else []

extensions = [
    Extension(
        f"fastad.kernels.{path.stem}",
        [str(path)],
        include_dirs=[np.get_include()],
        # NPY_TARGET_VERSION: the oldest NumPy the module runs with is pyproject.toml's
        # lower bound, whichever NumPy it is built with (their defaults differ)
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                       ("NPY_TARGET_VERSION", "NPY_2_0_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for path in sorted(Path("csrc").glob("*.pyx"))
]
tape = [] if PURE_PYTHON else [Extension(path[:-3].replace("/", "."), [path],
                                          extra_compile_args=compile_args)
                                for path in TAPE_MODULES]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        compile_time_env={"FASTAD_DEBUG": DEBUG},
        include_path=["csrc"],
        build_dir=f"{BUILD}/cython",
        force=DEBUG,  # debug C is always regenerated (the directives differ)
        nthreads=JOBS,
    ) + cythonize(tape, compiler_directives={"language_level": 3},  # Python's semantics
                  build_dir=f"{BUILD}/cython", nthreads=JOBS),
    options={"build": {"build_base": BUILD}, "build_ext": {"parallel": JOBS}},
)
