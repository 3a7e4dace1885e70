"""The deterministic problems the benches share (fastad, NumPy and PyTorch children build
the same ones): MLP parameters and data, and one MLP training step written in fastad,
in hand-written NumPy, and through fastad's kernels without the tape; the tiny-ops
chain in fastad and in hand-written NumPy."""


import numpy as np


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


def tiny_chain(fa, x0, depth):
    """The tiny-ops chain: x = sigmoid(x * 1.0001 + 0.01), `depth` times (3 ops each),
    loss sum(x), and its gradient with respect to the leaf x0."""
    x = x0
    for _ in range(depth):
        x = fa.sigmoid(x * 1.0001 + 0.01)
    return fa.grad(fa.sum(x), x0)


def numpy_tiny_chain(x0, depth):
    """The same chain by hand in NumPy: the forward saving each sigmoid output, then the
    backward loop; (loss, gradient)."""
    x = x0
    ys = []
    for _ in range(depth):
        x = x * 1.0001 + 0.01
        x = 1 / (1 + np.exp(-x))
        ys.append(x)
    loss = x.sum()
    g = np.ones_like(x)
    for y in reversed(ys):
        g = g * y * (1 - y)
        g = g * 1.0001
    return loss, g
