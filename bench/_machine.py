"""The command line every bench shares and what it says about the machine: CPU and
its vector ISA, BLAS libraries and threads (threadpoolctl), versions, load."""

import argparse
import importlib.util
import os
import platform

import numpy as np


def parser(description):
    """An ArgumentParser with the options every bench script shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="small sizes and few repeats (seconds; what CI runs)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per case (after warm-up); default depends on --quick")
    p.add_argument("--no-torch", action="store_true",
                   help="skip the PyTorch comparison even if torch is installed")
    p.add_argument("--threads", type=int, default=None,
                   help="limit BLAS threads here (threadpoolctl) and PyTorch's threads in "
                        "its child to N (default: the libraries' defaults)")
    p.add_argument("--profile", action="store_true",
                   help="after the benchmark, print where fastad's step spends its time: "
                        "compiled kernels by call, and a cProfile of the Python side")
    return p


_limits = []  # the active threadpoolctl limits (a limit lasts while it is referenced)


def limit_threads(n, user_api=None):
    """Limit the BLAS/OpenMP pools loaded in this process (only BLAS with
    user_api="blas") to n threads, for the rest of the process. False without
    threadpoolctl (from the bench extra)."""
    try:
        import threadpoolctl
    except ImportError:
        return False
    _limits.append(threadpoolctl.threadpool_limits(n, user_api=user_api))
    return True


def apply_thread_limit(args):
    """Limit every BLAS/OpenMP pool loaded in this process to args.threads (if given)."""
    if args.threads and not limit_threads(args.threads):
        raise SystemExit("--threads needs threadpoolctl: pip install '.[bench]'")


def blas_info():
    """The BLAS/OpenMP libraries loaded in this process (threadpoolctl), as dicts."""
    try:
        import threadpoolctl
    except ImportError:
        return [{"note": "threadpoolctl not installed"}]
    keep = ("user_api", "internal_api", "prefix", "version", "num_threads",
            "threading_layer", "architecture")
    return [{k: lib.get(k) for k in keep} for lib in threadpoolctl.threadpool_info()]


def isa_level(flags):
    """The widest x86 vector extension among the CPU's flags (what OpenBLAS's and NumPy's
    kernels are chosen by): AVX-512, AVX2, AVX or SSE."""
    for flag, level in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")):
        if flag in flags:
            return level
    return "SSE" if flags else "unknown"


def machine_info():
    info = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or "",
    }
    try:
        with open("/proc/cpuinfo") as f:
            fields = {key.strip(): value.strip()
                      for key, value in (line.split(":", 1) for line in f if ":" in line)}
        info["cpu"] = fields.get("model name", info["cpu"])
        info["isa"] = isa_level(fields.get("flags", "").split())
    except OSError:
        pass
    try:
        import scipy
        info["scipy"] = scipy.__version__
    except ImportError:
        pass
    try:
        import fastad
        info["fastad"] = fastad.__version__
        compiled = not fastad.core.sweep.__file__.endswith(".py")
        info["fastad_tape"] = "compiled" if compiled else "interpreted"
    except ImportError:
        pass
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def blas_line(libs):
    parts = []
    for lib in libs:
        if "internal_api" in lib:
            parts.append(f"{lib['internal_api']} {lib['version']} ({lib['prefix']}, "
                         f"{lib['num_threads']} threads, {lib.get('architecture')})")
    return "; ".join(parts) or "unknown"


def torch_available():
    """True if torch is importable (checked without importing it here)."""
    return importlib.util.find_spec("torch") is not None
