"""Module and the basic layers: Linear, Sequential, Identity and the activations.

As in PyTorch, assigning a `fa.Parameter` or a `Module` to an attribute of a Module
registers it, in assignment order; that order is the order of `.parameters()` and of
`.state_dict()`, whose names are attribute paths (`fc1.weight`) and, inside a
`Sequential`, layer indices counting every layer (`0.weight`, `2.bias`). A module is in
training mode (`.training`) until `.eval()`; `.train(mode)` sets the whole tree.
"""
import numpy as np

from .._checks import key_problems, writable_in_place
from ..core.arrays import check_matches, float_dtype
from ..core.clock import mark_modified
from ..core.modes import modes, replayed, special
from ..core.operands import Parameter
from ..core.tensor import Tensor
from ..ops.elementwise import relu, sigmoid, tanh
from ..ops.linalg import linear

__all__ = ["Module", "Linear", "Sequential", "Identity", "ReLU", "Sigmoid", "Tanh"]


class Module:
    """Base class of layers and models: subclasses set attributes and define forward()."""

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)
        # assignments of other attributes than `training`: part of fa.capture's guard
        object.__setattr__(self, "_changes", 0)

    def __setattr__(self, name, value):
        if name != "training":
            object.__setattr__(self, "_changes", self.__dict__.get("_changes", 0) + 1)
        registry = self.__dict__.get("_parameters")
        if registry is None:
            if isinstance(value, (Parameter, Module)):
                raise AttributeError(f"cannot assign {name!r} before Module.__init__() "
                                     "(call super().__init__() first)")
        else:
            registry.pop(name, None)
            self._modules.pop(name, None)
            if isinstance(value, Parameter):
                registry[name] = value
            elif isinstance(value, Module):
                self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        object.__setattr__(self, "_changes", self._changes + 1)
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        if special.count and modes.capture is not None:  # fa.capture: replays check it
            modes.capture.module_called(self)
        return self.forward(*args, **kwargs)

    # --- training mode ---------------------------------------------------------------
    def train(self, mode=True):
        """Set `.training = mode` on this module and every module under it; returns self."""
        if not isinstance(mode, (bool, np.bool_)):
            raise ValueError(f"{type(self).__name__}.train: training mode is expected to be "
                             f"boolean, got {mode!r}")
        self.training = bool(mode)
        for module in self._modules.values():
            module.train(mode)
        return self

    def eval(self):
        """Evaluation mode (`.train(False)`): Dropout passes its input through; returns self."""
        return self.train(False)

    # --- parameters -----------------------------------------------------------------
    def _all_named_parameters(self, prefix=""):
        """(name, Parameter) for every registered name, shared parameters included."""
        for name, p in self._parameters.items():
            yield prefix + name, p
        for name, module in self._modules.items():
            yield from module._all_named_parameters(f"{prefix}{name}.")

    def named_parameters(self):
        """[(name, Parameter)] in definition order, each parameter once."""
        seen = set()
        named = []
        for name, p in self._all_named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                named.append((name, p))
        return named

    def parameters(self):
        """The parameters in definition order (weight before bias), each once."""
        return [p for _, p in self.named_parameters()]

    @replayed
    def zero_grad(self):
        """Set every parameter's `.grad` to None."""
        for p in self.parameters():
            p.grad = None

    def state_dict(self):
        """{name: the parameter's live value array}, in definition order."""
        return {name: p.value for name, p in self._all_named_parameters()}

    def load_state_dict(self, state_dict):
        """Copy `state_dict`'s arrays into the parameters, in place.

        Keys must match `self.state_dict()`'s exactly (ValueError listing the missing and
        unexpected ones), and every array must have its parameter's shape (ValueError)
        and dtype (TypeError). Everything is checked before anything is copied. A
        parameter whose array cannot be written in place (read-only, strided) gets a
        new C-contiguous array instead; `state_dict`'s arrays are never written.
        """
        own = dict(self._all_named_parameters())
        problems = key_problems(own, state_dict)
        if problems:
            raise ValueError(f"load_state_dict for {type(self).__name__}: {problems}")
        sources = {}
        for name, p in own.items():
            source = state_dict[name]
            if isinstance(source, Tensor):
                source = source.value
            check_matches(source, p.value, f"load_state_dict: {name!r}")
            sources[name] = source
        # A source may be (a view of) another parameter's array, e.g. two layers swapped:
        # snapshot those before the first copy overwrites them.
        destinations = [p.value for p in own.values()]
        for name, source in sources.items():
            if any(np.may_share_memory(source, d) for d in destinations):
                sources[name] = source.copy()
        for name, p in own.items():
            if writable_in_place(p.value):
                np.copyto(p.value, sources[name])
            else:
                p.value = np.array(sources[name], order="C")
            mark_modified(p)  # tapes recorded before the load must not be swept after it

    # --- repr -----------------------------------------------------------------------
    def extra_repr(self):
        """The text inside this module's parentheses (its settings)."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        children = [f"({name}): {_indent(repr(m))}" for name, m in self._modules.items()]
        lines = ([extra] if extra else []) + children
        if not lines:
            return f"{type(self).__name__}()"
        if not children:
            return f"{type(self).__name__}({extra})"
        return type(self).__name__ + "(\n  " + "\n  ".join(lines) + "\n)"


def _indent(text):
    return text.replace("\n", "\n  ")


class Linear(Module):
    """y = x @ weight.T + bias, with weight (out_features, in_features) as in PyTorch.

    Initialised as PyTorch does, weight then bias, both from U(-k, k) with
    k = 1/sqrt(in_features), drawn from `rng` (a np.random.Generator, used and advanced
    as it is; an int seed; or None for fresh entropy).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, rng=None):
        super().__init__()
        self.in_features = _size("in_features", in_features)
        self.out_features = _size("out_features", out_features)
        dtype = float_dtype(dtype, "Linear")
        rng = np.random.default_rng(rng)
        bound = 1 / np.sqrt(self.in_features) if self.in_features else 0.0
        self.weight = Parameter(
            rng.uniform(-bound, bound, (self.out_features, self.in_features)), dtype=dtype)
        self.bias = (Parameter(rng.uniform(-bound, bound, self.out_features), dtype=dtype)
                     if bias else None)

    def forward(self, x):
        shape = x.shape if isinstance(x, Tensor) else np.shape(x)
        if not shape or shape[-1] != self.in_features:
            raise ValueError(f"{self!r}: input of shape {tuple(shape)} does not end in "
                             f"in_features={self.in_features}")
        return linear(x, self.weight, self.bias)

    def extra_repr(self):
        text = (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
        if self.weight.dtype != np.float32:
            text += f", dtype={self.weight.dtype}"
        return text


def _size(name, n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"Linear: {name} must be an int, got {n!r}")
    if n < 0:
        raise ValueError(f"Linear: {name} must be >= 0, got {n}")
    return int(n)


class Sequential(Module):
    """Layers applied in order; layer i is registered under the name str(i)."""

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {i} is a {type(layer).__name__}, not a "
                                "fa.nn.Module")
            setattr(self, str(i), layer)

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        layers = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*layers[index])
        return layers[index]


class Identity(Module):
    """Returns its input unchanged (a placeholder layer, as torch.nn.Identity)."""

    def __init__(self, *args, **kwargs):  # torch's Identity also ignores its arguments
        super().__init__()

    def forward(self, x):
        return x


class _Activation(Module):
    """A parameter-free layer applying one elementwise function."""

    function = None

    def forward(self, x):
        return type(self).function(x)


class ReLU(_Activation):
    """max(x, 0), elementwise."""

    function = staticmethod(relu)


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)), elementwise."""

    function = staticmethod(sigmoid)


class Tanh(_Activation):
    """tanh(x), elementwise."""

    function = staticmethod(tanh)
