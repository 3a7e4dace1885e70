# distutils: extra_compile_args = -fno-math-errno
"""Fused optimizer updates: one pass over each parameter, no temporaries.

NumPy would need several passes and temporaries per update (Adam: about ten); these
kernels read each element of the parameter, its gradient and its state once and
write the parameter and state back in place.

The Python layer (fastad/optim.py) has validated everything: the parameter, gradient
and state arrays are C-contiguous, of one dtype (float32 or float64) and one size.
The arithmetic follows torch.optim's single-tensor code operation by operation, in the
parameter's precision (hyperparameters are rounded to it first, as PyTorch does).

Vectorisation: each loop body is an inline function whose option flags are literal
constants at its call sites, so every option combination compiles to its own
branch-free loop that the C compiler vectorises. `-fno-math-errno` (the line above)
lets it vectorise sqrt too: the argument (a running mean of squares) is never negative.
"""
cimport numpy as cnp
from libc.math cimport fabs, sqrt, sqrtf

cnp.import_array()

from _common cimport PyThreadState, index_t, is_f32, ptr, real, release_gil, take_gil


cdef inline real sqrt_(real v) noexcept nogil:
    if real is float:
        return sqrtf(v)
    else:
        return sqrt(v)


# ----------------------------------------------------------------------------
# SGD (dampening 0):  d = g + wd * p  (only when wd != 0, as PyTorch)
#   momentum:  buf = buf * momentum + d  (buf starts at zero, so the first step
#              sets buf = d, as PyTorch does);  d = buf, or d + momentum * buf
#              with Nesterov
#   p = p - lr * d
# ----------------------------------------------------------------------------

cdef enum Momentum:
    NONE, HEAVY_BALL, NESTEROV


cdef inline void sgd_loop(real* p, const real* g, real* buf, index_t size, real lr,
                          real momentum, real weight_decay, bint decay,
                          Momentum kind) noexcept nogil:
    cdef index_t i
    cdef real d
    for i in range(size):
        d = g[i]
        if decay:
            d = d + weight_decay * p[i]
        if kind != NONE:
            buf[i] = buf[i] * momentum + d
            d = d + momentum * buf[i] if kind == NESTEROV else buf[i]
        p[i] = p[i] - lr * d


cdef void sgd_kernel(real* p, const real* g, real* buf, index_t size, real lr,
                     real momentum, real weight_decay, Momentum kind) noexcept nogil:
    # The flags are literals in each call, so each call compiles to a branch-free loop.
    if weight_decay != 0:
        if kind == NONE:
            sgd_loop(p, g, buf, size, lr, momentum, weight_decay, True, NONE)
        elif kind == HEAVY_BALL:
            sgd_loop(p, g, buf, size, lr, momentum, weight_decay, True, HEAVY_BALL)
        else:
            sgd_loop(p, g, buf, size, lr, momentum, weight_decay, True, NESTEROV)
    else:
        if kind == NONE:
            sgd_loop(p, g, buf, size, lr, momentum, weight_decay, False, NONE)
        elif kind == HEAVY_BALL:
            sgd_loop(p, g, buf, size, lr, momentum, weight_decay, False, HEAVY_BALL)
        else:
            sgd_loop(p, g, buf, size, lr, momentum, weight_decay, False, NESTEROV)


def sgd_step(cnp.ndarray param, cnp.ndarray grad, object momentum_buffer, double lr,
             double momentum, double weight_decay, bint nesterov):
    """One SGD update of `param` in place.

    `momentum_buffer` is None without momentum; otherwise an array that starts at zero.
    """
    cdef index_t size = cnp.PyArray_SIZE(param)
    cdef void* pp = ptr(param)
    cdef void* pg = ptr(grad)
    cdef void* pb = NULL
    cdef Momentum kind = NONE
    cdef bint f32 = is_f32(param)
    if momentum_buffer is not None:
        pb = ptr(<cnp.ndarray>momentum_buffer)
        kind = NESTEROV if nesterov else HEAVY_BALL
    cdef PyThreadState* released = release_gil(size)
    if f32:
        sgd_kernel[float](<float*>pp, <float*>pg, <float*>pb, size, <float>lr,
                          <float>momentum, <float>weight_decay, kind)
    else:
        sgd_kernel[double](<double*>pp, <double*>pg, <double*>pb, size, lr, momentum,
                           weight_decay, kind)
    take_gil(released)


# ----------------------------------------------------------------------------
# Adam (no amsgrad), with weight decay either L2 (Adam) or decoupled (AdamW):
#   L2:         d = g + wd * p                   (only when wd != 0, as PyTorch)
#   decoupled:  p = p * (1 - lr * wd), d = g     (the same condition)
#   m = lerp(m, d, 1 - beta1)             (PyTorch's lerp, both of its branches)
#   v = v * beta2 + (1 - beta2) * d * d
#   p = p + (-step_size) * m / (sqrt(v) / sqrt(bias_correction2) + eps)
# with step_size = lr / bias_correction1, both corrections computed by the caller.
# ----------------------------------------------------------------------------

cdef enum Decay:
    NO_DECAY, L2, DECOUPLED


cdef inline void adam_loop(real* p, const real* g, real* m, real* v, index_t size,
                           real weight1, real beta2, real weight2, real neg_step_size,
                           real bias_correction2_sqrt, real eps, real weight_decay,
                           real param_scale, Decay decay, bint small_weight) noexcept nogil:
    cdef index_t i
    cdef real d
    cdef real rest1 = 1 - weight1
    for i in range(size):
        d = g[i]
        if decay == L2:
            d = d + weight_decay * p[i]
        elif decay == DECOUPLED:
            p[i] = p[i] * param_scale
        if small_weight:
            m[i] = m[i] + weight1 * (d - m[i])
        else:
            m[i] = d - (d - m[i]) * rest1
        v[i] = v[i] * beta2 + weight2 * d * d
        p[i] = p[i] + neg_step_size * m[i] / (sqrt_(v[i]) / bias_correction2_sqrt + eps)


cdef inline void adam_decay(real* p, const real* g, real* m, real* v, index_t size,
                            real weight1, real beta2, real weight2, real neg_step_size,
                            real bias_correction2_sqrt, real eps, real weight_decay,
                            real param_scale, Decay decay) noexcept nogil:
    # Called with a literal `decay`; picks lerp's branch with a literal flag too.
    if fabs(weight1) < 0.5:
        adam_loop(p, g, m, v, size, weight1, beta2, weight2, neg_step_size,
                  bias_correction2_sqrt, eps, weight_decay, param_scale, decay, True)
    else:
        adam_loop(p, g, m, v, size, weight1, beta2, weight2, neg_step_size,
                  bias_correction2_sqrt, eps, weight_decay, param_scale, decay, False)


cdef void adam_kernel(real* p, const real* g, real* m, real* v, index_t size,
                      real weight1, real beta2, real weight2, real neg_step_size,
                      real bias_correction2_sqrt, real eps, real weight_decay,
                      real param_scale) noexcept nogil:
    # As for SGD: literal flags, one branch-free loop per combination.
    if weight_decay != 0:
        adam_decay(p, g, m, v, size, weight1, beta2, weight2, neg_step_size,
                   bias_correction2_sqrt, eps, weight_decay, param_scale, L2)
    elif param_scale != 1:
        adam_decay(p, g, m, v, size, weight1, beta2, weight2, neg_step_size,
                   bias_correction2_sqrt, eps, weight_decay, param_scale, DECOUPLED)
    else:
        adam_decay(p, g, m, v, size, weight1, beta2, weight2, neg_step_size,
                   bias_correction2_sqrt, eps, weight_decay, param_scale, NO_DECAY)


def adam_step(cnp.ndarray param, cnp.ndarray grad, cnp.ndarray exp_avg,
              cnp.ndarray exp_avg_sq, double beta1, double beta2, double step_size,
              double bias_correction2_sqrt, double eps, double weight_decay,
              double param_scale):
    """One Adam update of `param`, `exp_avg` and `exp_avg_sq` in place.

    `weight_decay` is Adam's L2 term (added to the gradient); `param_scale` is AdamW's
    decoupled decay 1 - lr * weight_decay (multiplying the parameter first). Pass 0 and
    1 respectively for none.
    """
    cdef index_t size = cnp.PyArray_SIZE(param)
    cdef void* pp = ptr(param)
    cdef void* pg = ptr(grad)
    cdef void* pm = ptr(exp_avg)
    cdef void* pv = ptr(exp_avg_sq)
    cdef bint f32 = is_f32(param)
    cdef double weight1 = 1 - beta1, weight2 = 1 - beta2
    cdef PyThreadState* released = release_gil(size)
    if f32:
        adam_kernel[float](<float*>pp, <float*>pg, <float*>pm, <float*>pv, size,
                           <float>weight1, <float>beta2, <float>weight2,
                           <float>-step_size, <float>bias_correction2_sqrt, <float>eps,
                           <float>weight_decay, <float>param_scale)
    else:
        adam_kernel[double](<double*>pp, <double*>pg, <double*>pm, <double*>pv, size,
                            weight1, beta2, weight2, -step_size, bias_correction2_sqrt,
                            eps, weight_decay, param_scale)
    take_gil(released)
