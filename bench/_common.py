"""Shared helpers for the benchmark scripts in bench/.

Everything here is about measuring honestly on a small, noisy machine:

- `interleave` runs warm-ups, then rounds in which every case runs once (the order
  rotating from round to round), and reports medians: drift hits all cases alike, so
  the ratios of one run are meaningful even when absolute times move by 2x.
- PyTorch is never imported here. `TorchChild` starts `bench/_torch_ref.py` in a child
  process (its OpenMP threads and OpenBLAS's spin-wait against each other when they
  share a process) and talks to it over a pipe, so a script can alternate blocks of
  in-process repeats with blocks of PyTorch repeats.
- `run_child_json` runs a Python child and reads the JSON it prints (used for peak
  memory: the child reports its own VmHWM from /proc/self/status).
- `blas_info` reports BLAS library, version and threads (threadpoolctl).

This module imports only the standard library and NumPy at import time, so memory
children can use it without loading fastad or SciPy.
"""
import argparse
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
TORCH_REF = os.path.join(BENCH_DIR, "_torch_ref.py")

now = time.perf_counter


# --- command line -------------------------------------------------------------------

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


_limits = []


def apply_thread_limit(args):
    """Limit every BLAS/OpenMP pool loaded in this process to args.threads (if given)."""
    if args.threads:
        import threadpoolctl
        _limits.append(threadpoolctl.threadpool_limits(args.threads))


# --- timing ---------------------------------------------------------------------------

def timed(fn, number=1):
    """Wrap a plain callable as a case for `interleave`: the case runs fn `number` times
    and returns the mean seconds per call."""
    if number == 1:
        def case():
            t0 = now()
            fn()
            return now() - t0
    else:
        def case():
            t0 = now()
            for _ in range(number):
                fn()
            return (now() - t0) / number
    case.__name__ = getattr(fn, "__name__", "case")
    return case


def interleave(cases, repeats, warmup=1, between=None):
    """Median-of-repeats timing of several cases, interleaved.

    `cases` is a list of (name, case) where case() runs one unit of work and returns
    the seconds it took (wrap plain callables with `timed`; a case that must do
    untimed setup first, e.g. a forward pass, times itself). Each case is warmed up
    `warmup` times, then `repeats` rounds run every case once, the starting case
    rotating each round. `between()` (untimed) runs after every case, e.g. to drop
    references. Returns {name: [seconds, ...]}.
    """
    names = [n for n, _ in cases]
    times = {n: [] for n in names}
    for _ in range(warmup):
        for _, case in cases:
            case()
            if between:
                between()
    for r in range(repeats):
        k = r % len(cases)
        for name, case in cases[k:] + cases[:k]:
            times[name].append(case())
            if between:
                between()
    return times


def in_process(cases):
    """A block runner for `alternate_blocks`: the cases, interleaved within the block."""
    def run(n):
        return interleave(cases, n, warmup=0)
    run.warm = lambda: interleave(cases, 0, warmup=1)
    return run


def in_child(child, name="pytorch", warmup=2, number=1):
    """A block runner for `alternate_blocks`: n samples of `number` steps (mean per step)
    timed by a TorchChild."""
    def run(n):
        ts = child.time(n * number)
        return {name: [sum(ts[i:i + number]) / number for i in range(0, len(ts), number)]}
    run.warm = lambda: child.time(0, warmup=warmup)
    return run


def alternate_blocks(runners, rounds, per_block, settle_seconds=0.2):
    """Time several groups of cases in alternating blocks; returns {name: [seconds]}.

    Each runner (see `in_process`, `in_child`) times `per_block` repeats of its cases.
    Groups that must not run back to back at a fine grain go in separate runners:
    PyTorch (its own process) and anything calling NumPy's BLAS, because a BLAS
    library's worker threads keep spinning for ~0.1 s after each call, and two pools
    spinning on 2 cores slow each other by 10-100x on small products. `settle` lets
    them go idle between blocks; the order of the runners rotates every round.
    """
    times = {}
    for run in runners:
        run.warm()
        settle(settle_seconds)
    for r in range(rounds):
        k = r % len(runners)
        for run in runners[k:] + runners[:k]:
            for name, ts in run(per_block).items():
                times.setdefault(name, []).extend(ts)
            settle(settle_seconds)
    return times


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def paired_ratio(times, a, b, per_block):
    """Median over rounds of (median of a's block) / (median of b's block).

    `times` comes from `alternate_blocks`, whose rounds hold one block of every case, run
    within a second or so of each other. This machine drifts between a fast and a slow
    phase (up to 2x, over minutes), which a ratio of overall medians mixes in; the ratio
    within each round cancels it.
    """
    ratios = []
    for start in range(0, min(len(times[a]), len(times[b])), per_block):
        block_a, block_b = times[a][start:start + per_block], times[b][start:start + per_block]
        ratios.append(median(block_a) / median(block_b))
    return median(ratios)


def summarize(xs):
    """{median, min, max, n} of a list of seconds."""
    if not xs:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": median(xs), "min": min(xs), "max": max(xs), "n": len(xs),
            "samples": list(xs)}


def settle(seconds):
    """Let spinning BLAS/OpenMP worker threads of the other process go idle."""
    gc.collect()
    time.sleep(seconds)


def minor_faults():
    """Minor page faults of this process so far (first touches of fresh memory)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# --- memory -------------------------------------------------------------------------

def proc_status_kb(field):
    """A /proc/self/status field in kB (VmHWM: peak RSS, VmRSS: current RSS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    if field == "VmHWM":
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return None


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs). True if done."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# --- environment ------------------------------------------------------------------------

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


# --- children -------------------------------------------------------------------------

def child_env():
    """The environment for a child: bench/ importable, and no empty PYTHONPATH entry
    (an empty entry means the working directory, the repo root, whose uncompiled
    fastad/ would shadow the installed package)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (BENCH_DIR, env.get("PYTHONPATH")) if p)
    return env


def run_child_json(args, timeout=900):
    """Run `python args...` (from the repo root) and return the JSON of its last stdout line."""
    proc = subprocess.run([sys.executable] + list(args), cwd=REPO_DIR, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return json.loads(lines[-1])


class TorchChild:
    """A PyTorch process serving timing requests over a pipe (see _torch_ref.py).

    Usage: child = TorchChild("seed", sizes=[...], batch=128, ...); child.time(5) ->
    list of seconds per step; child.close(). Between requests the child blocks on its
    stdin, so its threads sleep while this process measures.
    """

    def __init__(self, bench, threads=None, **config):
        cmd = [sys.executable, TORCH_REF]
        self.proc = subprocess.Popen(cmd, cwd=REPO_DIR, env=child_env(), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=1)
        self.info = self.request({"op": "setup", "bench": bench, "threads": threads,
                                  "config": config})

    def request(self, message):
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            err = self.proc.stderr.read()
            raise RuntimeError(f"PyTorch child died:\n{err[-3000:]}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"PyTorch child: {reply['error']}")
        return reply

    def time(self, n, warmup=0):
        """Time n steps (after `warmup` untimed ones); returns the list of seconds."""
        return self.request({"op": "time", "n": n, "warmup": warmup})["times"]

    def set(self, **config):
        return self.request({"op": "set", "config": config})

    def close(self):
        if self.proc.poll() is None:
            try:
                self.request({"op": "quit"})
            except (RuntimeError, ValueError, OSError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def maybe_torch(args, bench, **config):
    """A started TorchChild, or None (with the reason printed) if PyTorch is unavailable."""
    if args.no_torch:
        print("PyTorch: skipped (--no-torch)")
        return None
    if not torch_available():
        print("PyTorch: not installed, comparison skipped")
        return None
    try:
        return TorchChild(bench, threads=args.threads, **config)
    except (RuntimeError, OSError) as e:
        print(f"PyTorch: child failed to start, comparison skipped: {e}")
        return None


# --- deterministic problems (shared by fastad, NumPy, PyTorch children) ----------------

def mlp_params(sizes, seed=0, std=0.01, dtype=np.float32):
    """[w1, b1, w2, b2, ...]: w_l of shape (in, out) ~ N(0, std), b_l zeros.

    Drawn straight in `dtype` and scaled in place, so no float64 or scaled temporary
    (the seed network's first weight is 328 MB).
    """
    rng = np.random.default_rng(seed)
    params = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:]):
        w = rng.standard_normal((d_in, d_out), dtype=dtype)
        w *= np.dtype(dtype).type(std)
        params += [w, np.zeros(d_out, dtype)]
    return params


def mlp_data(d_in, n_classes, batch, seed=1, dtype=np.float32):
    """(X, y): X ~ N(0, 1) of shape (batch, d_in), y integer labels in [0, n_classes)."""
    rng = np.random.default_rng([seed, batch])
    X = rng.standard_normal((batch, d_in), dtype=dtype)
    y = rng.integers(0, n_classes, batch).astype(np.int64)
    return X, y


def fastad_mlp_tensors(fa, arrays, X):
    """(params, x, rows): the MLP's weights and data as fastad tensors sharing the arrays,
    and the row index of the seed's loss."""
    params = [fa.tensor(a, requires_grad=True) for a in arrays]
    return params, fa.tensor(X), np.arange(X.shape[0])


def mlp_gemm_flops(sizes, batch):
    """FLOPs of one training step's matrix products: forward, dW (all), dX (not the data)."""
    fwd = sum(2 * batch * a * b for a, b in zip(sizes[:-1], sizes[1:]))
    dx = sum(2 * batch * a * b for a, b in zip(sizes[1:-1], sizes[2:]))
    return 2 * fwd + dx


# --- the same MLP step in fastad and in hand-written NumPy --------------------------------

def fastad_mlp_loss(fa, params, x, y, rows, act="sigmoid", loss="seed"):
    """Forward pass of the MLP in fastad: `fa.dot(L, w) + b`, `act` on hidden layers.

    loss="seed" is the seed's `-fa.mean(fa.log(fa.softmax(L4))[np.arange(n), y])`;
    loss="ce" is `fa.cross_entropy(L4, y)`.
    """
    f = fa.sigmoid if act == "sigmoid" else fa.relu
    n_layers = len(params) // 2
    h = x
    for l in range(n_layers):
        z = fa.dot(h, params[2 * l]) + params[2 * l + 1]
        h = f(z) if l < n_layers - 1 else z
    if loss == "seed":
        return -fa.mean(fa.log(fa.softmax(h))[rows, y])
    return fa.cross_entropy(h, y)


def numpy_mlp_step(params, X, y, act="sigmoid"):
    """(loss, grads) of the MLP by hand in NumPy: what backprop needs and nothing more.

    In-place activations, one saved activation per layer, the softmax-cross-entropy
    gradient (softmax - onehot) / n (the same for both loss spellings), and no dX for
    the data.
    """
    n = X.shape[0]
    n_layers = len(params) // 2
    acts = [X]
    h = X
    for l in range(n_layers):
        z = h @ params[2 * l]
        z += params[2 * l + 1]
        if l < n_layers - 1:
            if act == "sigmoid":
                np.negative(z, out=z)
                np.exp(z, out=z)
                z += 1
                np.reciprocal(z, out=z)
            else:
                np.maximum(z, 0, out=z)
            acts.append(z)
        h = z
    rows = np.arange(n)
    h -= h.max(axis=1, keepdims=True)          # logits, shifted
    e = np.exp(h)
    total = e.sum(axis=1)
    loss = float(np.mean(np.log(total) - h[rows, y]))
    d = e
    d /= total[:, None]
    d[rows, y] -= 1
    d *= d.dtype.type(1.0 / n)
    grads = [None] * len(params)
    for l in reversed(range(n_layers)):
        grads[2 * l] = acts[l].T @ d
        grads[2 * l + 1] = d.sum(axis=0)
        if l > 0:
            d_prev = d @ params[2 * l].T
            a = acts[l]
            if act == "sigmoid":
                d_prev *= a
                d_prev *= 1 - a
            else:
                d_prev *= a > 0
            d = d_prev
    return loss, grads


def kernels_mlp_step(params, X, y):
    """The ReLU MLP's step through fastad's own compiled kernels, called directly: the
    work fastad's step does without its tape (no Tensors, nodes or sweep). Private API
    (fastad.kernels), for measuring the tape's share only. Returns the gradients."""
    from fastad.kernels import gemm, pointwise, rows
    n, n_layers = X.shape[0], len(params) // 2
    labels = np.ascontiguousarray(y, dtype=np.intp)
    acts, h = [X], X
    for l in range(n_layers):
        w, b = params[2 * l], params[2 * l + 1]
        z = np.empty((n, w.shape[1]), w.dtype)
        gemm.gemm(h, w, z, False)
        pointwise.add_row(z, b, z)
        h = pointwise.relu(z) if l < n_layers - 1 else z
        acts.append(h)
    probs, losses = np.empty_like(h), np.empty(n, h.dtype)
    rows.softmax_cross_entropy(h, labels, probs, losses)
    d = np.empty_like(probs)
    rows.softmax_cross_entropy_grad(probs, labels, np.full(n, 1 / n, h.dtype), d, False)
    grads = [None] * len(params)
    for l in reversed(range(n_layers)):
        w = params[2 * l]
        grads[2 * l] = np.empty(w.shape, w.dtype)
        gemm.gemm(acts[l].T, d, grads[2 * l], False)
        grads[2 * l + 1] = np.empty(w.shape[1], w.dtype)
        pointwise.column_sum(d, grads[2 * l + 1], False)
        if l > 0:
            d_prev = np.empty((n, w.shape[0]), w.dtype)
            gemm.gemm(d, w.T, d_prev, False)
            d = pointwise.relu_grad(d_prev, acts[l], None, False)
    return grads


# --- the GEMM floor through SciPy's BLAS -------------------------------------------------

def _fortran_operand(m):
    """(array, trans) such that BLAS reads `m` without a copy: F-contiguous array + flag."""
    if m.flags.f_contiguous:
        return m, 0
    if m.flags.c_contiguous:
        return m.T, 1
    raise ValueError("GEMM floor operands must be C- or F-contiguous")


class Product:
    """C = A @ B through scipy.linalg.blas.?gemm on preallocated storage, no copies.

    `A` and `B` are C- or F-contiguous (views such as W.T are fine). The result is
    written either into a C-contiguous (row-major) or an F-contiguous (column-major)
    array, the two orientations BLAS can be asked for: row-major C is computed as the
    column-major C^T = B^T A^T. `choose_orientation` times both and keeps the faster.
    """

    def __init__(self, name, A, B):
        from scipy.linalg import blas
        self.name = name
        self.A, self.B = A, B
        self.m, self.k = A.shape
        self.n = B.shape[1]
        self.gemm = blas.sgemm if A.dtype == np.float32 else blas.dgemm
        self.outputs = {"C": np.empty((self.m, self.n), A.dtype),
                        "F": np.empty((self.m, self.n), A.dtype, order="F")}
        self.orientation = "C"
        self.timings = {}
        self._calls = {o: self._make_call(o) for o in ("C", "F")}
        for o in ("C", "F"):
            self._calls[o]()
            if not np.shares_memory(self._last, self.outputs[o]):
                raise RuntimeError(f"{name}: f2py copied the output ({o}); floor invalid")

    @property
    def flops(self):
        return 2 * self.m * self.n * self.k

    def _make_call(self, orientation):
        gemm = self.gemm
        if orientation == "F":
            a, ta = _fortran_operand(self.A)
            b, tb = _fortran_operand(self.B)
            c = self.outputs["F"]
        else:  # C^T = B^T @ A^T, column-major
            a, ta = _fortran_operand(self.B.T)
            b, tb = _fortran_operand(self.A.T)
            c = self.outputs["C"].T

        def call():
            self._last = gemm(1.0, a, b, 0.0, c, ta, tb, 1)
        return call

    def __call__(self):
        self._calls[self.orientation]()

    def call(self, orientation):
        self._calls[orientation]()

    def check(self):
        """Max relative difference of both orientations from NumPy's A @ B."""
        ref = self.A.astype(np.float64) @ self.B.astype(np.float64)
        scale = np.abs(ref).max() or 1.0
        out = {}
        for o in ("C", "F"):
            self._calls[o]()
            out[o] = float(np.abs(self.outputs[o] - ref).max() / scale)
        return out

    def choose_orientation(self, repeats=3):
        cases = [(o, timed(self._calls[o])) for o in ("C", "F")]
        times = interleave(cases, repeats, warmup=1)
        # min, not median: a floor is the best the BLAS can do, and a busy machine only
        # ever adds time
        self.timings = {o: min(t) for o, t in times.items()}
        self.orientation = min(self.timings, key=self.timings.get)
        return self.orientation


def mlp_gemm_floor(params, X, sizes, batch):
    """The step's matrix products on preallocated arrays, as `Product`s.

    For layer l with input A_{l-1} (batch, d_{l-1}) and weight W_l (d_{l-1}, d_l):
    forward Z_l = A_{l-1} @ W_l; dW_l = A_{l-1}^T @ dZ_l; dA_{l-1} = dZ_l @ W_l^T for
    l >= 2 (none for the data). Operands hold real data (the products are timed, not
    checked, but NaN/denormal inputs would skew the timing).
    """
    dtype = X.dtype
    rng = np.random.default_rng(2)
    weights = params[0::2]
    acts = [X] + [rng.random((batch, d), dtype=dtype) for d in sizes[1:-1]]
    dzs = [(rng.random((batch, d), dtype=dtype) - dtype.type(0.5)) * dtype.type(0.01)
           for d in sizes[1:]]
    products = []
    for l, W in enumerate(weights):
        products.append(Product(f"fwd  Z{l+1} = A{l} @ W{l+1}", acts[l], W))
    for l in reversed(range(len(weights))):
        products.append(Product(f"dW{l+1} = A{l}^T @ dZ{l+1}", acts[l].T, dzs[l]))
        if l > 0:
            products.append(Product(f"dA{l} = dZ{l+1} @ W{l+1}^T", dzs[l], weights[l].T))
    return products


class GemmFloor:
    """A training step's matrix products (`mlp_gemm_floor`), each timed in both output
    orientations and then run in its faster one; optionally checked against NumPy."""

    def __init__(self, params, X, sizes, batch, repeats, check=False):
        self.products = mlp_gemm_floor(params, X, sizes, batch)
        if check:
            for prod in self.products:
                errors = prod.check()
                if max(errors.values()) > 1e-4:
                    raise AssertionError(f"GEMM floor product {prod.name} is wrong: {errors}")
        for prod in self.products:
            prod.choose_orientation(repeats=repeats)

    def step(self):
        for prod in self.products:
            prod()

    def row_major_step(self):
        """Every product written row-major, as fastad writes most of them."""
        for prod in self.products:
            prod.call("C")


# --- profiling (--profile) -------------------------------------------------------------

def kernel_breakdown(step, n, label_gemm=True):
    """Time every call fastad makes into its compiled kernels during `n` calls of step.

    Wraps each function of fastad's kernel modules (fastad.kernels.gemm, pointwise,
    rows), which the ops call by module attribute, in a timer for the instrumented
    steps. Returns (seconds per step uninstrumented, [(seconds per step, calls per step,
    kernel label)], seconds per step instrumented).
    """
    import collections

    from fastad.kernels import gemm, pointwise, rows
    originals = {(module, name): f for module in (gemm, pointwise, rows)
                 for name, f in vars(module).items()
                 if callable(f) and not isinstance(f, type) and not name.startswith("_")}
    totals = collections.defaultdict(float)
    counts = collections.Counter()

    def label(name, a):
        if name == "gemm" and label_gemm and len(a) >= 3:
            def lay(m):
                return "C" if m.flags.c_contiguous else "F"
            acc = f" accumulate={bool(a[3])}" if len(a) > 3 else ""
            return (f"gemm {a[0].shape[0]}x{a[0].shape[1]}({lay(a[0])}) @ "
                    f"{a[1].shape[0]}x{a[1].shape[1]}({lay(a[1])}){acc}")
        return name

    def timed_kernel(name, f):
        def wrapper(*a, **k):
            t0 = now()
            r = f(*a, **k)
            key = label(name, a)
            totals[key] += now() - t0
            counts[key] += 1
            return r
        return wrapper

    step()
    t0 = now()
    for _ in range(n):
        step()
    plain = (now() - t0) / n
    for (module, name), f in originals.items():
        setattr(module, name, timed_kernel(name, f))
    try:
        step()
        totals.clear()
        counts.clear()
        t0 = now()
        for _ in range(n):
            step()
        instrumented = (now() - t0) / n
    finally:
        for (module, name), f in originals.items():
            setattr(module, name, f)
    rows = sorted(((t / n, counts[k] / n, k) for k, t in totals.items()), reverse=True)
    return plain, rows, instrumented


def profile_report(step, n, kernel_n=None, top=15):
    """Print fastad's kernel breakdown and a cProfile of `n` steps (for --profile)."""
    import cProfile
    import io
    import pstats
    print("\n--profile: time inside fastad's compiled kernels (fastad.kernels calls)")
    plain, rows, instrumented = kernel_breakdown(step, kernel_n or n)
    total = sum(t for t, _, _ in rows)
    table_rows = [[fmt_time(t), f"{c:g}", k] for t, c, k in rows]
    print_table(table_rows, ["per step", "calls", "kernel"])
    print(f"step {fmt_time(plain)} uninstrumented; kernels {fmt_time(total)} "
          f"({total / plain:.0%}); outside kernels ~{fmt_time(plain - total)} "
          f"(instrumented step {fmt_time(instrumented)})")
    from fastad.ops.linalg import product_orders
    for (dtype, m, k, n_cols), (choice, seconds) in product_orders().items():
        trials = ", ".join(f"{o} {min(s) * 1e3:.1f} ms" for o, s in seconds.items() if s)
        print(f"product {m}x{k} @ {k}x{n_cols} {dtype}: written {choice or 'still timing'} "
              f"(fastest trial: {trials}; FASTAD_GEMM_ORIENTATION=C|F forces it)")
    print(f"\n--profile: cProfile of {n} steps, top {top} by own time")
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(n):
        step()
    pr.disable()
    out = io.StringIO()
    pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(top)
    text = out.getvalue()
    print(text[text.find("ncalls") - 3 if "ncalls" in text else 0:].rstrip())


# --- output ---------------------------------------------------------------------------

def fmt_time(seconds):
    if seconds is None or seconds != seconds:
        return "-"
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def time_unit(seconds):
    """(unit, scale) that suits every value in `seconds`, so a table column holds one
    unit, named in its header: time_unit([0.3, 0.0004]) -> ("ms", 1e3)."""
    finite = [x for x in seconds if x is not None and x == x]
    top = max(finite, default=0.0)
    if top >= 1:
        return "s", 1.0
    if top >= 1e-3:
        return "ms", 1e3
    return "us", 1e6


def fmt_in(seconds, unit):
    """`seconds` as a bare number in `unit` (one of time_unit's)."""
    if seconds is None or seconds != seconds:
        return "-"
    value = seconds * {"s": 1.0, "ms": 1e3, "us": 1e6}[unit]
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def fmt_ratio(r):
    return "-" if r is None or r != r else f"{r:.3f}x"


def target_check(ratio, limit):
    """'met' / 'MISSED' / 'n/a' for ratio <= limit."""
    if ratio is None or ratio != ratio:
        return "n/a"
    return "met" if ratio <= limit else "MISSED"


def print_table(rows, headers):
    """Print rows (lists of str) under headers, columns aligned."""
    cols = list(zip(*([headers] + rows))) if rows else [[h] for h in headers]
    widths = [max(len(str(c)) for c in col) for col in cols]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def write_json(path, data):
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=2, default=_json_default)
        print(f"wrote {path}")


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def header(title, args, extra=""):
    info = machine_info()   # imports scipy/fastad first, so threadpoolctl sees their BLAS
    apply_thread_limit(args)
    libs = blas_info()
    print(f"== {title}{' (--quick)' if args.quick else ''}")
    print(f"machine: {info['cpu']} ({info.get('isa', '?')}), {info['cpus']} cpus; python "
          f"{info['python']}, numpy "
          f"{info['numpy']}, scipy {info.get('scipy', '?')}, fastad {info.get('fastad', '?')} "
          f"(tape {info.get('fastad_tape', '?')})")
    print(f"BLAS: {blas_line(libs)}")
    if "loadavg" in info:
        load = info["loadavg"]
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in load)}")
        if load[0] > 0.5:
            print("WARNING: the machine is busy; multi-threaded BLAS stalls when a core is "
                  "taken (tens of ms per call): absolute times and ratios are unreliable")
    if extra:
        print(extra)
    return {"machine": info, "blas": libs}
