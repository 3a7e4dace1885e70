"""fastad's compiled kernels, built from csrc/ (one module per .pyx file):

- `gemm`: the matrix product through SciPy's BLAS (the row-major trick, written once);
- `pointwise`: activations and their gradients, same-layout arithmetic, bias add and
  column sum;
- `rows`: softmax, log-softmax, fused softmax-cross-entropy and the label pick, along
  the last axis;
- `updates`: the fused optimizer updates (SGD, Adam);
- `signals`: `check_signals`, which lets Ctrl-C stop a compiled loop;
- `views`: the read-only views fa.grad hands out (nothing can make them writeable);
- `hooks`, `machine`: the call hook fa.capture diverts ops through, and the loop a
  captured program replays in.

Kernels trust their arguments: the Python layer (fastad.ops, fastad.optim) checks
shapes, dtypes and layouts before calling one.
"""
