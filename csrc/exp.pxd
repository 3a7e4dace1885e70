# Shared by the kernel modules that compute exp (header only: no module of its own).
from libc.stdint cimport uint32_t, uint64_t

from _common cimport real


# ----------------------------------------------------------------------------
# exp, inline and branch-free so that GCC vectorises the loops that call it (NumPy's
# vectorised exp has no C API). Cephes' method: exp(x) = 2**n * exp(r) with
# n = round(x / ln 2) and r = x - n ln 2, ln 2 split in two (ln2_hi has trailing zero
# bits, so n * ln2_hi is exact); exp(r) on |r| <= ln(2) / 2 from Cephes' polynomial
# (float32) or Pade form (float64); 2**n built from exponent bits in two halves, so a
# subnormal result is rounded once. Accuracy against np.exp: tests/test_kernels.py.
# GCC if-converts the clamps and selects (and so vectorises the loops) only under
# -fno-trapping-math (the first line): no kernel reads the FP exception flags, and the
# flag changes no value.
# ----------------------------------------------------------------------------

cdef union f32_bits:
    float value
    uint32_t bits


cdef union f64_bits:
    double value
    uint64_t bits


cdef inline real pow2i(real shifted) noexcept nogil:
    """2**k from shifted = k + SHIFTER (k integral, 2**k normal): k sits in the low bits of
    shifted's mantissa, which become the exponent field."""
    cdef f32_bits b32
    cdef f64_bits b64
    if real is float:
        b32.value = shifted
        b32.bits = (b32.bits + 127) << 23
        return b32.value
    else:
        b64.value = shifted
        b64.bits = (b64.bits + 1023) << 52
        return b64.value


cdef inline real exp_reduced(real r) noexcept nogil:
    """exp(r) for |r| <= ln(2) / 2 (a little beyond stays accurate)."""
    cdef real rr = r * r, p, q, one = 1, two = 2
    if real is float:
        p = <float>1.9875691500e-4
        p = p * r + <float>1.3981999507e-3
        p = p * r + <float>8.3334519073e-3
        p = p * r + <float>4.1665795894e-2
        p = p * r + <float>1.6666665459e-1
        p = p * r + <float>5.0000001201e-1
        return p * rr + r + one
    else:
        p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
                 + 9.99999999999999999910e-1)
        q = (((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
              + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0)
        return one + two * (p / (q - p))


cdef inline real exp_real(real x) noexcept nogil:
    """exp(x): NaN stays NaN, inf past the overflow threshold, 0 past the underflow one."""
    cdef real lo, hi, log2e, ln2_hi, ln2_lo, shifter, n, half, r, point_five = 0.5
    # SHIFTER = 1.5 * 2**(mantissa bits): (y + SHIFTER) - SHIFTER rounds y to an integer
    if real is float:
        lo, hi = -104.0, 89.0   # exp(lo) rounds to 0, exp(hi) to inf
        log2e, ln2_hi, ln2_lo = 1.44269504088896341, 0.693359375, -2.12194440e-4
        shifter = 12582912.0
    else:
        lo, hi = -746.0, 710.0
        log2e, ln2_hi, ln2_lo = 1.4426950408889634074, 6.93145751953125e-1, \
            1.42860682030941723212e-6
        shifter = 6755399441055744.0
    x = lo if x < lo else x   # NaN compares false both times and passes through
    x = hi if x > hi else x
    n = (x * log2e + shifter) - shifter
    r = (x - n * ln2_hi) - n * ln2_lo
    half = (n * point_five + shifter) - shifter
    return exp_reduced(r) * pow2i(half + shifter) * pow2i((n - half) + shifter)

