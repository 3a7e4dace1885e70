"""fa.nn's training kit against PyTorch: train()/eval(), Identity, Dropout, LayerNorm,
the loss modules and nn.utils.clip_grad_norm_."""
import numpy as np
import pytest

import fastad as fa
from fastad import nn


def torch_dtype(torch, dtype):
    return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32


# --- train() / eval() -----------------------------------------------------------------

def test_train_and_eval_reach_every_module_and_return_self():
    inner = nn.Sequential(nn.Linear(2, 3), nn.Dropout())
    model = nn.Sequential(inner, nn.ReLU(), nn.Dropout(0.1))
    modules = [model, inner, *inner, *model]
    assert all(m.training for m in modules)
    assert model.eval() is model
    assert not any(m.training for m in modules)
    assert model.train() is model
    assert all(m.training for m in modules)
    inner.train(False)
    assert model.training and not any(m.training for m in [inner, *inner])


def test_train_rejects_a_non_boolean_mode():
    with pytest.raises(ValueError, match="Sequential.train.*boolean.*'yes'"):
        nn.Sequential().train("yes")


def test_training_mode_is_not_state():
    model = nn.Sequential(nn.Linear(2, 3), nn.Dropout())
    names = list(model.state_dict())
    model.eval()
    assert list(model.state_dict()) == names == ["0.weight", "0.bias"]


def test_identity_returns_its_input():
    x = fa.tensor(np.ones(3), requires_grad=True)
    assert nn.Identity(54, unused="ignored")(x) is x
    assert nn.Identity().parameters() == []


def test_reprs_match_torch(torch):
    assert repr(nn.Identity()) == repr(torch.nn.Identity())
    for args in [(3,), ((2, 3),)]:
        for kwargs in [{}, {"elementwise_affine": False}, {"bias": False}, {"eps": 1e-3}]:
            assert repr(nn.LayerNorm(*args, **kwargs)) == repr(torch.nn.LayerNorm(*args, **kwargs))
    for name in ["CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss"]:
        ours, theirs = getattr(nn, name), getattr(torch.nn, name)
        assert repr(ours(reduction="sum")) == repr(theirs(reduction="sum"))


# --- Dropout --------------------------------------------------------------------------

def test_dropout_keeps_with_probability_one_minus_p_and_scales(dtype):
    p = 0.3
    x = fa.tensor(np.ones((200, 500), dtype), requires_grad=True)
    y = nn.Dropout(p, rng=0)(x)
    scale = dtype.type(1) / dtype.type(1 - p)  # torch: bernoulli(1-p) / (1-p) in x's dtype
    assert y.dtype == dtype
    assert set(np.unique(y.value)) == {0, scale}
    kept = y.value != 0
    assert abs(kept.mean() - (1 - p)) < 0.005  # 100,000 draws: sd 0.0014
    y.backward(seed=np.arange(x.size, dtype=dtype).reshape(x.shape))
    np.testing.assert_array_equal(x.grad, np.where(kept, np.arange(x.size).reshape(x.shape)
                                                   * scale, 0).astype(dtype))


def test_dropout_draws_in_the_documented_order():
    x = np.random.default_rng(1).standard_normal((6, 7)).astype(np.float32)
    layer = nn.Dropout(0.4, rng=np.random.default_rng(5))
    first, second = layer(x).value, layer(x).value
    replay = np.random.default_rng(5)
    scale = np.float32(1) / np.float32(0.6)
    for y in (first, second):
        mask = (replay.random(x.shape, dtype=np.float32) >= 0.4) * scale
        np.testing.assert_array_equal(y, x * mask)
    assert not np.array_equal(first, second)


def test_dropout_with_the_same_seed_repeats_and_shares_a_generator():
    x = np.ones((4, 9))
    assert np.array_equal(nn.Dropout(rng=3)(x).value, nn.Dropout(rng=3)(x).value)
    rng = np.random.default_rng(0)
    layer = nn.Dropout(rng=rng)
    assert layer.rng is rng  # used and advanced as it is, e.g. saved by its state


def test_dropout_is_the_identity_in_eval_mode_and_for_p_zero():
    x = fa.tensor(np.ones((3, 4)), requires_grad=True)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert nn.Dropout(0.5, rng=rng).eval()(x) is x
    assert nn.Dropout(0.0, rng=rng)(x) is x
    assert rng.bit_generator.state == state  # nothing drawn


def test_dropout_with_p_one_gives_zeros_and_zero_gradients():
    x = fa.tensor(np.full((3, 4), 2.0), requires_grad=True)
    y = nn.Dropout(1.0)(x)
    np.testing.assert_array_equal(y.value, 0)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, 0)


@pytest.mark.parametrize("p, error", [(-0.1, ValueError), (1.5, ValueError),
                                      (float("nan"), ValueError), ("0.5", TypeError)])
def test_dropout_rejects_a_bad_p(p, error):
    with pytest.raises(error, match="Dropout"):
        nn.Dropout(p)


def test_dropout_matches_torch_statistics(torch):
    # torch draws from its own generator: compare what the layer does, not the mask.
    x = np.ones((100, 1000), np.float32)
    ours = nn.Dropout(0.2, rng=0)(x).value
    theirs = torch.nn.Dropout(0.2)(torch.from_numpy(x)).numpy()
    assert set(np.unique(ours)) == set(np.unique(theirs))
    assert abs((ours != 0).mean() - (theirs != 0).mean()) < 0.01


# --- LayerNorm ------------------------------------------------------------------------

@pytest.mark.parametrize("shape, normalized", [((5, 8), 8), ((2, 3, 4, 6), (4, 6)),
                                               ((7,), [7])])
@pytest.mark.parametrize("affine", [True, False])
def test_layernorm_matches_torch(torch, dtype, assert_close, shape, normalized, affine):
    rng = np.random.default_rng(0)
    ours = nn.LayerNorm(normalized, eps=1e-3, elementwise_affine=affine, dtype=dtype)
    theirs = torch.nn.LayerNorm(normalized, eps=1e-3, elementwise_affine=affine,
                                dtype=torch_dtype(torch, dtype))
    if affine:  # move away from ones/zeros so their gradients matter
        for p in ours.parameters():
            p.value = rng.standard_normal(p.shape).astype(dtype)
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    seed = rng.standard_normal(shape).astype(dtype)
    xt = fa.tensor(x, requires_grad=True)
    y = ours(xt)
    y.backward(seed=seed)
    x_torch = torch.tensor(x, requires_grad=True)
    theirs(x_torch).backward(torch.from_numpy(seed))

    assert y.dtype == dtype
    assert_close(y.value, theirs(x_torch).detach().numpy(), dtype)
    assert_close(xt.grad, x_torch.grad.numpy(), dtype)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert_close(p.grad, q.grad.numpy(), dtype, err_msg=name)


def test_layernorm_parameters_start_at_ones_and_zeros():
    layer = nn.LayerNorm((2, 3))
    assert list(layer.state_dict()) == ["weight", "bias"]
    assert layer.weight.dtype == np.float32 and layer.weight.shape == (2, 3)
    np.testing.assert_array_equal(layer.weight.value, 1)
    np.testing.assert_array_equal(layer.bias.value, 0)
    no_bias = nn.LayerNorm(3, bias=False)
    assert no_bias.bias is None and no_bias.parameters() == [no_bias.weight]
    assert nn.LayerNorm(3, elementwise_affine=False).parameters() == []
    assert nn.LayerNorm(3, dtype=np.float64).weight.dtype == np.float64


def test_layernorm_gradcheck():
    layer = nn.LayerNorm(4, dtype=np.float64)
    rng = np.random.default_rng(0)
    for p in layer.parameters():
        p.value = rng.standard_normal(p.shape)
    x = fa.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    seed = rng.standard_normal((3, 4))

    def weighted_output(x, weight, bias):  # gradcheck passes float64 copies of the inputs
        layer.weight, layer.bias = weight, bias
        return fa.mul(layer(x), seed)

    assert fa.gradcheck(weighted_output, [x, layer.weight, layer.bias])


@pytest.mark.parametrize("args, error, pattern", [
    ((0,), ValueError, "normalized_shape"), (((),), ValueError, "normalized_shape"),
    ((2.5,), TypeError, "normalized_shape"), ((3, -1.0), ValueError, "eps"),
])
def test_layernorm_rejects_bad_arguments(args, error, pattern):
    with pytest.raises(error, match=f"LayerNorm.*{pattern}"):
        nn.LayerNorm(*args)


def test_layernorm_rejects_an_input_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"LayerNorm: normalized_shape=\(4,\).*\(2, 3\)"):
        nn.LayerNorm(4)(np.ones((2, 3), np.float32))


# --- loss modules ---------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_loss_matches_torch(torch, dtype, assert_close, reduction):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 4)).astype(dtype)
    labels = rng.integers(0, 4, 6)
    x = fa.tensor(logits, requires_grad=True)
    loss = nn.CrossEntropyLoss(reduction=reduction)(x, labels)
    fa.sum(loss).backward()
    xt = torch.tensor(logits, requires_grad=True)
    reference = torch.nn.CrossEntropyLoss(reduction=reduction)(xt, torch.from_numpy(labels))
    reference.sum().backward()
    assert_close(loss.value, reference.detach().numpy(), dtype)
    assert_close(x.grad, xt.grad.numpy(), dtype)


@pytest.mark.parametrize("name, function", [("MSELoss", "mse_loss"),
                                            ("BCEWithLogitsLoss",
                                             "binary_cross_entropy_with_logits")])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_float_target_losses_match_torch(torch, dtype, assert_close, name, function, reduction):
    if not hasattr(fa, function):
        pytest.skip(f"fa.{function} is not in this branch yet")
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((5, 3)).astype(dtype)
    target = rng.random((5, 3)).astype(dtype)
    x = fa.tensor(inputs, requires_grad=True)
    loss = getattr(nn, name)(reduction=reduction)(x, target)
    fa.sum(loss).backward()
    xt = torch.tensor(inputs, requires_grad=True)
    reference = getattr(torch.nn, name)(reduction=reduction)(xt, torch.from_numpy(target))
    reference.sum().backward()
    assert_close(loss.value, reference.detach().numpy(), dtype)
    assert_close(x.grad, xt.grad.numpy(), dtype)


def test_loss_modules_reject_a_bad_reduction():
    for loss in (nn.CrossEntropyLoss, nn.MSELoss, nn.BCEWithLogitsLoss):
        with pytest.raises(ValueError, match=f"{loss.__name__}: reduction.*'average'"):
            loss(reduction="average")


@pytest.mark.parametrize("name, function", [("CrossEntropyLoss", "cross_entropy"),
                                            ("MSELoss", "mse_loss"),
                                            ("BCEWithLogitsLoss",
                                             "binary_cross_entropy_with_logits")])
def test_loss_modules_call_their_function(monkeypatch, name, function):
    calls = []
    monkeypatch.setitem(fa.ops.REGISTRY, function, lambda *args, **kwargs: calls.append(
        (args, kwargs)) or "loss")
    assert getattr(nn, name)(reduction="sum")("input", "target") == "loss"
    assert calls == [(("input", "target"), {"reduction": "sum"})]


# --- clip_grad_norm_ ------------------------------------------------------------------

def grads_for(shapes, dtype, scale, seed=0):
    rng = np.random.default_rng(seed)
    params = [fa.Parameter(np.zeros(s), dtype=dtype) for s in shapes]
    for p in params:
        p.grad = (rng.standard_normal(p.shape) * scale).astype(dtype)
    return params


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, float("inf"), 0.0])
@pytest.mark.parametrize("scale", [0.01, 10.0])
def test_clip_grad_norm_matches_torch(torch, dtype, assert_close, norm_type, scale):
    shapes = [(4, 3), (3,), (2, 2, 2), (1,)]
    params = grads_for(shapes, dtype, scale)
    theirs = [torch.zeros(s, dtype=torch_dtype(torch, dtype), requires_grad=True)
              for s in shapes]
    for p, q in zip(params, theirs):
        q.grad = torch.from_numpy(p.grad.copy())
    total = nn.utils.clip_grad_norm_(params, 1.0, norm_type=norm_type)
    reference = torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type=norm_type)
    assert isinstance(total, np.ndarray) and total.shape == () and total.dtype == dtype
    assert_close(total, reference.numpy(), dtype)
    for p, q in zip(params, theirs):
        assert_close(p.grad, q.grad.numpy(), dtype)


def test_clip_grad_norm_scales_in_place_by_torchs_factor():
    params = grads_for([(3, 3), (5,)], np.float64, 10.0)
    arrays = [p.grad for p in params]
    before = [g.copy() for g in arrays]
    total = nn.utils.clip_grad_norm_(params, 0.5)
    expected = np.sqrt(sum((g * g).sum() for g in before))
    assert total.item() == pytest.approx(expected, rel=1e-12)
    for p, g, b in zip(params, arrays, before):
        assert p.grad is g  # the same array, scaled in place
        np.testing.assert_array_equal(g, b * (0.5 / (total + 1e-6)))


def test_clip_grad_norm_leaves_small_gradients_alone():
    params = grads_for([(3,)], np.float32, 0.01)
    before = params[0].grad.copy()
    nn.utils.clip_grad_norm_(params, 1.0)
    np.testing.assert_array_equal(params[0].grad, before)


def test_clip_grad_norm_skips_missing_gradients_and_accepts_one_tensor():
    with_grad, without = grads_for([(3,)], np.float32, 10.0)[0], fa.Parameter(np.zeros(2))
    total = nn.utils.clip_grad_norm_([without, with_grad], 1.0)
    assert without.grad is None and total > 1
    assert np.linalg.norm(with_grad.grad) == pytest.approx(1.0, rel=1e-5)
    assert nn.utils.clip_grad_norm_(with_grad, 1.0) == pytest.approx(1.0, rel=1e-5)
    empty = nn.utils.clip_grad_norm_([without], 1.0)
    assert empty.item() == 0.0 and empty.dtype == np.float32  # torch.tensor(0.)


def test_clip_grad_norm_scales_a_shared_gradient_once():
    a, b = fa.Parameter(np.zeros(4)), fa.Parameter(np.zeros(4))
    shared = np.full(4, 3.0)
    a.grad = shared
    b.grad = shared
    total = nn.utils.clip_grad_norm_([a, b], 1.0)
    assert total.item() == pytest.approx(np.sqrt(2 * 36))  # counted twice, as torch
    np.testing.assert_allclose(a.grad, 3.0 / (total + 1e-6))
    np.testing.assert_allclose(b.grad, a.grad)


def test_clip_grad_norm_copies_gradients_that_are_views_of_one_buffer():
    buffer = np.full(6, 2.0)
    a, b = fa.Parameter(np.zeros(3)), fa.Parameter(np.zeros(3))
    a.grad, b.grad = buffer[:3], buffer[3:]
    total = nn.utils.clip_grad_norm_([a, b], 1.0)
    np.testing.assert_allclose(a.grad, 2.0 / (total + 1e-6))
    np.testing.assert_allclose(b.grad, 2.0 / (total + 1e-6))
    np.testing.assert_array_equal(buffer, 2.0)


def test_clip_grad_norm_nonfinite():
    params = grads_for([(3,)], np.float64, 1.0)
    params[0].grad[0] = np.inf
    with pytest.raises(RuntimeError, match="clip_grad_norm_.*non-finite"):
        nn.utils.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    assert np.isinf(nn.utils.clip_grad_norm_(params, 1.0))


@pytest.mark.parametrize("args, error, pattern", [
    (([np.ones(2)], 1.0), TypeError, r"parameters\[0\] is a ndarray"),
    (([], "1"), TypeError, "max_norm"),
    (([], 1.0, None), TypeError, "norm_type"),
])
def test_clip_grad_norm_rejects_bad_arguments(args, error, pattern):
    with pytest.raises(error, match=f"clip_grad_norm_: {pattern}"):
        nn.utils.clip_grad_norm_(*args)


def test_nn_utils_imports_as_in_torch():
    import fastad.nn.utils
    from fastad.nn.utils import clip_grad_norm_
    assert fa.nn.utils is fastad.nn.utils and clip_grad_norm_ is nn.utils.clip_grad_norm_
