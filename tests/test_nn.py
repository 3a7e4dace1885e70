"""fa.nn: Linear's layout, init and forward; Sequential; parameters and state dicts;
and a small network that actually learns."""
import numpy as np
import pytest

import fastad as fa
from fastad import nn


def mlp(dtype=np.float32, rng=0):
    """Linear, ReLU, Linear, Tanh, Linear(no bias), Sigmoid: indices 0..5."""
    rng = np.random.default_rng(rng)
    return nn.Sequential(nn.Linear(3, 4, dtype=dtype, rng=rng), nn.ReLU(),
                         nn.Linear(4, 5, dtype=dtype, rng=rng), nn.Tanh(),
                         nn.Linear(5, 2, bias=False, dtype=dtype, rng=rng), nn.Sigmoid())


def torch_mlp(torch, dtype):
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 5),
                               torch.nn.Tanh(), torch.nn.Linear(5, 2, bias=False),
                               torch.nn.Sigmoid()).to(dtype)


# --- Linear ---------------------------------------------------------------------------

def test_linear_layout_and_dtype():
    layer = nn.Linear(3, 4)
    assert layer.weight.shape == (4, 3) and layer.bias.shape == (4,)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    assert isinstance(layer.weight, fa.Parameter) and layer.weight.requires_grad
    assert nn.Linear(3, 4, dtype=np.float64).weight.dtype == np.float64
    no_bias = nn.Linear(3, 4, bias=False)
    assert no_bias.bias is None and no_bias.parameters() == [no_bias.weight]
    assert no_bias(np.ones((2, 3), np.float32)).shape == (2, 4)


@pytest.mark.parametrize("args, kwargs, error", [
    ((3, -1), {}, ValueError),
    ((2.5, 4), {}, TypeError),
    ((3, 4), {"dtype": np.int32}, TypeError),
    ((3, 4), {"dtype": np.float16}, TypeError),
])
def test_linear_rejects_bad_arguments(args, kwargs, error):
    with pytest.raises(error):
        nn.Linear(*args, **kwargs)


def test_linear_init_is_uniform_within_one_over_sqrt_fan_in():
    layer = nn.Linear(400, 500, dtype=np.float64, rng=0)
    bound = 1 / np.sqrt(400)
    w, b = layer.weight.value, layer.bias.value
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert w.min() < -0.99 * bound and w.max() > 0.99 * bound
    # U(-k, k): mean 0, std k / sqrt(3); 200,000 draws pin both down closely.
    assert abs(w.mean()) < 0.01 * bound
    assert abs(w.std() / (bound / np.sqrt(3)) - 1) < 0.01
    # Each tenth of [-k, k] gets about a tenth of the draws.
    counts, _ = np.histogram(w, bins=10, range=(-bound, bound))
    assert np.all(np.abs(counts / w.size - 0.1) < 0.005)


def test_linear_init_bound_matches_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    reference = torch.nn.Linear(400, 500)
    bound = 1 / np.sqrt(400)
    for ours, theirs in [(nn.Linear(400, 500, rng=0).weight.value, reference.weight),
                         (nn.Linear(400, 500, rng=0).bias.value, reference.bias)]:
        theirs = theirs.detach().numpy()
        assert np.abs(theirs).max() <= bound
        np.testing.assert_allclose([ours.min(), ours.max(), ours.std()],
                                   [theirs.min(), theirs.max(), theirs.std()],
                                   rtol=0.1 if ours.size < 1000 else 0.02)


def test_linear_seeding():
    same = [nn.Linear(6, 5, rng=7) for _ in range(2)]
    np.testing.assert_array_equal(same[0].weight.value, same[1].weight.value)
    np.testing.assert_array_equal(same[0].bias.value, same[1].bias.value)
    assert not np.array_equal(nn.Linear(6, 5, rng=8).weight.value, same[0].weight.value)
    assert not np.array_equal(nn.Linear(6, 5).weight.value, nn.Linear(6, 5).weight.value)
    # A Generator is used as it is and advanced: weight then bias, then the next layer.
    gen = np.random.default_rng(3)
    first, second = nn.Linear(6, 5, rng=gen), nn.Linear(6, 5, rng=gen)
    replay = np.random.default_rng(3)
    k = 1 / np.sqrt(6)
    for layer in (first, second):
        np.testing.assert_array_equal(layer.weight.value,
                                      replay.uniform(-k, k, (5, 6)).astype(np.float32))
        np.testing.assert_array_equal(layer.bias.value,
                                      replay.uniform(-k, k, 5).astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    layer = nn.Linear(6, 4, dtype=dtype, rng=1)
    reference = torch.nn.Linear(6, 4).to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(layer.weight.value))
        reference.bias.copy_(torch.from_numpy(layer.bias.value))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 6)).astype(dtype)
    seed = rng.standard_normal((8, 4)).astype(dtype)

    xt = fa.tensor(x, requires_grad=True)
    y = layer(xt)
    y.backward(seed=seed)
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = reference(x_torch)
    y_torch.backward(torch.from_numpy(seed))

    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(y.value, y_torch.detach().numpy(), **tol)
    np.testing.assert_allclose(layer.weight.grad, reference.weight.grad.numpy(), **tol)
    np.testing.assert_allclose(layer.bias.grad, reference.bias.grad.numpy(), **tol)
    np.testing.assert_allclose(xt.grad, x_torch.grad.numpy(), **tol)


def test_linear_rejects_wrong_input_width():
    with pytest.raises(ValueError, match="in_features=3"):
        nn.Linear(3, 2)(np.ones((4, 5), np.float32))


# --- Sequential, parameters, repr -----------------------------------------------------

def test_sequential_chains_layers_in_order():
    model = mlp(np.float64)
    x = np.random.default_rng(0).standard_normal((7, 3))
    h = np.maximum(x @ model[0].weight.value.T + model[0].bias.value, 0)
    h = np.tanh(h @ model[2].weight.value.T + model[2].bias.value)
    expected = 1 / (1 + np.exp(-(h @ model[4].weight.value.T)))
    np.testing.assert_allclose(model(x).value, expected, rtol=1e-12)
    assert len(model) == 6 and list(model) == [model[i] for i in range(6)]
    assert model[-1] is model[5]
    assert isinstance(model[:2], nn.Sequential) and len(model[:2]) == 2


def test_sequential_rejects_non_modules():
    with pytest.raises(TypeError, match="layer 1"):
        nn.Sequential(nn.Linear(2, 2), fa.relu)


def test_parameters_in_definition_order():
    model = mlp()
    expected = [model[0].weight, model[0].bias, model[2].weight, model[2].bias,
                model[4].weight]
    params = model.parameters()
    assert len(params) == len(expected)
    assert all(p is q for p, q in zip(params, expected))


def test_state_dict_names_match_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = mlp(), torch_mlp(torch, torch.float32)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert list(ours.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight"]
    # torch accepts fastad's state dict as it is, and then computes the same function.
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(ours(x).value, theirs(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-6)


def test_repr_matches_torch():
    torch = pytest.importorskip("torch")
    assert repr(mlp()) == repr(torch_mlp(torch, torch.float32))
    assert repr(nn.Linear(2, 3)) == repr(torch.nn.Linear(2, 3))


def test_repr_shows_non_default_dtype():
    assert repr(nn.Linear(2, 3, dtype=np.float64)) == (
        "Linear(in_features=2, out_features=3, bias=True, dtype=float64)")


def test_state_dict_holds_the_live_arrays():
    model = mlp(np.float64)
    state = model.state_dict()
    assert state["2.weight"] is model[2].weight.value
    x = np.ones((1, 3))
    before = model(x).value
    state["4.weight"][...] = 0            # writes through to the parameter
    np.testing.assert_allclose(model(x).value, 0.5)
    assert not np.allclose(before, 0.5)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4, rng=0)
        self.act = nn.Tanh()
        self.scale = fa.Parameter(np.ones(4, np.float32))
        self.fc2 = nn.Linear(4, 2, rng=1)
        self.note = "not registered"

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)) * self.scale)


def test_custom_module_registers_attributes_in_order():
    net = Net()
    assert list(net.state_dict()) == ["scale", "fc1.weight", "fc1.bias", "fc2.weight",
                                      "fc2.bias"]
    assert net.parameters()[0] is net.scale
    assert net(np.ones((2, 3), np.float32)).shape == (2, 2)
    assert repr(net).startswith("Net(\n  (fc1): Linear(in_features=3")


def test_module_attribute_before_init_is_an_error():
    class Broken(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match="__init__"):
        Broken()


def test_shared_parameter_is_listed_once():
    first = nn.Linear(3, 3, rng=0)
    model = nn.Sequential(first, nn.ReLU(), first)
    assert len(model.parameters()) == 2
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    fa.optim.SGD(model.parameters(), lr=0.1)  # no duplicate-parameter error


# --- load_state_dict ------------------------------------------------------------------

def test_load_state_dict_copies_in_place():
    source, target = mlp(rng=0), mlp(rng=1)
    arrays = {k: v for k, v in target.state_dict().items()}
    before = [p._modified_at for p in target.parameters()]
    target.load_state_dict(source.state_dict())
    for key, value in source.state_dict().items():
        assert target.state_dict()[key] is arrays[key]          # same live arrays
        np.testing.assert_array_equal(arrays[key], value)
        assert arrays[key] is not value
    assert all(p._modified_at > b for p, b in zip(target.parameters(), before))
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(target(x).value, source(x).value)


def test_load_state_dict_accepts_tensors():
    source, target = mlp(rng=0), mlp(rng=1)
    target.load_state_dict({k: fa.tensor(v) for k, v in source.state_dict().items()})
    np.testing.assert_array_equal(target[0].weight.value, source[0].weight.value)


def broken_state(change):
    state = {k: v.copy() for k, v in mlp(rng=0).state_dict().items()}
    change(state)
    return state


@pytest.mark.parametrize("change, error, pattern", [
    (lambda s: s.pop("2.bias"), ValueError, r"missing key\(s\): '2\.bias'"),
    (lambda s: s.update(extra=np.ones(3, np.float32)), ValueError,
     r"unexpected key\(s\): 'extra'"),
    (lambda s: s.update({"0.weight": np.ones((3, 4), np.float32)}), ValueError,
     r"'0\.weight' has shape \(3, 4\), the parameter has shape \(4, 3\)"),
    (lambda s: s.update({"2.weight": s["2.weight"].astype(np.float64)}), TypeError,
     r"'2\.weight' has dtype float64, the parameter has dtype float32"),
    (lambda s: s.update({"0.bias": [0.0] * 4}), TypeError, r"'0\.bias' must be an ndarray"),
])
def test_load_state_dict_errors_name_the_key(change, error, pattern):
    model = mlp(rng=1)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=pattern):
        model.load_state_dict(broken_state(change))
    for key, value in model.state_dict().items():   # nothing was copied
        np.testing.assert_array_equal(value, before[key])


def test_load_state_dict_into_a_read_only_parameter_replaces_its_array():
    # The old code copied 0.weight, then failed on the read-only 0.bias half-way.
    source, target = mlp(rng=0), mlp(rng=1)
    frozen = target[0].bias.value
    frozen.flags.writeable = False
    saved = frozen.copy()
    live = target[0].weight.value
    target.load_state_dict(source.state_dict())
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key], value)
    assert target[0].weight.value is live                  # written in place
    assert target[0].bias.value is not frozen and target[0].bias.value.flags.writeable
    np.testing.assert_array_equal(frozen, saved)             # the caller's array untouched


def test_load_state_dict_into_a_strided_parameter():
    source, target = mlp(rng=0), mlp(rng=1)
    target[2].weight.value = np.asfortranarray(target[2].weight.value)
    target.load_state_dict(source.state_dict())
    assert target[2].weight.value.flags.c_contiguous
    np.testing.assert_array_equal(target[2].weight.value, source[2].weight.value)


def test_load_state_dict_with_swapped_live_arrays():
    # Each source is the other parameter's live array: both are read before any copy.
    model = fa.nn.Sequential(fa.nn.Linear(3, 3, rng=0), fa.nn.Linear(3, 3, rng=1))
    first, second = model[0].weight.value.copy(), model[1].weight.value.copy()
    state = model.state_dict()
    state["0.weight"], state["1.weight"] = state["1.weight"], state["0.weight"]
    model.load_state_dict(state)
    np.testing.assert_array_equal(model[0].weight.value, second)
    np.testing.assert_array_equal(model[1].weight.value, first)


# --- learning -----------------------------------------------------------------------

def test_small_mlp_learns_a_separable_problem():
    # XOR of the quadrants, with a margin around the axes: separable, but not linearly.
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (600, 2))
    x = x[np.abs(x).min(axis=1) > 0.1]
    labels = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    x = x.astype(np.float32)
    train, test = slice(0, 300), slice(300, None)

    model = nn.Sequential(nn.Linear(2, 16, rng=1), nn.Tanh(), nn.Linear(16, 2, rng=2))
    opt = fa.optim.Adam(model.parameters(), lr=0.05)
    with fa.no_grad():
        chance = np.mean(fa.argmax(model(x[test]), axis=1) == labels[test])
    for _ in range(200):
        opt.zero_grad()
        fa.cross_entropy(model(x[train]), labels[train]).backward()
        opt.step()
    with fa.no_grad():
        accuracy = np.mean(fa.argmax(model(x[test]), axis=1) == labels[test])
    assert chance < 0.8
    assert accuracy > 0.95
