"""The GEMM floor: the same matrix products a step makes, called straight through SciPy's
BLAS in their fastest orientation, to which fastad's step is compared."""


import numpy as np

from _timing import interleave, timed


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
