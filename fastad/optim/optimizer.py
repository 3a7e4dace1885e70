"""The Optimizer base class: parameters, the checks every step makes, state and
state_dict (the update formulas are its subclasses', in optimizers.py).

An optimizer holds a list of parameters (leaf Tensors that require grad). `step()`
reads each parameter's `.grad` (None: the parameter is skipped) and updates its
`.value` in place through a compiled kernel that makes one pass over the parameter,
its gradient and its state. Every update bumps the parameter's version counter, so a
sweep over a tape recorded before the update raises RuntimeError instead of using the
new values.

Hyperparameters and state are plain attributes (`opt.lr = 0.01`, `opt.momentum_buffers`,
`opt.exp_avgs`, `opt.exp_avg_sqs`, `opt.steps`: lists with one entry per parameter).
`step()` checks all of them, and every parameter and gradient, before it changes
anything: a bad value raises ValueError or TypeError naming the optimizer and the
attribute, and a changed valid value takes effect at that step. Arrays assigned to the
state become the optimizer's and are updated in place (`load_state_dict` copies
instead), except that one the kernels cannot write on its own (read-only, strided,
misaligned, a view, or already in use as another buffer or as a parameter's value or
gradient) is replaced by a copy. State arrays are allocated at construction or at the
first step that needs them, so later steps allocate none.

`state_dict()` / `load_state_dict()` use torch.optim's layout, with plain Python
numbers and ndarrays:
`{"state": {0: {"momentum_buffer": array}, ...}, "param_groups": [{"lr": 0.1, ...,
"params": [0, 1, ...]}]}` (Adam and AdamW: `{"step": int, "exp_avg": array,
"exp_avg_sq": array}` per parameter).
"""
import numbers

import numpy as np

from .._checks import MAX_COUNT as _MAX_COUNT
from .._checks import count as _count
from .._checks import key_problems, writable_in_place
from ..core.arrays import check_matches
from ..core.clock import mark_modified
from ..core.modes import replayed
from ..core.tensor import Tensor

__all__ = ["Optimizer"]


def _sequence(owner, name, value, length):
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{owner}: {name} must be a list with one entry per parameter, "
                        f"got {type(value).__name__}")
    if len(value) != length:
        raise ValueError(f"{owner}: {name} has {len(value)} entries, the optimizer has "
                         f"{length} parameters")


def _owned_and_writable(array):
    """True when a kernel may write `array` in place and nothing else sees its memory."""
    return writable_in_place(array) and array.flags.owndata


class Optimizer:
    """Base class: the parameters, and the checks and state_dict shared by all optimizers.

    A subclass lists its hyperparameters (`hyperparameters`: attribute -> check), its
    per-parameter state arrays (`buffers`: state_dict key -> attribute) and counts
    (`counts`: key -> attribute), and defines `_update` (one parameter's step).
    """

    hyperparameters = {}
    buffers = {}
    counts = {}

    def __init__(self, params, **hyperparameters):
        name = type(self).__name__
        if isinstance(params, Tensor):
            raise TypeError(f"{name}: params must be an iterable of Tensors "
                            "(e.g. model.parameters()), got a single Tensor")
        options = self._checked_options(hyperparameters, name)
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{name}: got an empty parameter list")
        seen = set()
        for i, p in enumerate(self.params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: params[{i}] is a {type(p).__name__}, not a "
                                "fastad Tensor")
            if not p.requires_grad or not p.is_leaf:
                raise ValueError(f"{name}: params[{i}] (shape {p.shape}) must be a leaf "
                                 "that requires grad, e.g. a fa.Parameter")
            if id(p) in seen:
                raise ValueError(f"{name}: params[{i}] (shape {p.shape}) appears more "
                                 "than once")
            seen.add(id(p))
        self._shapes = [p.value.shape for p in self.params]
        self._dtypes = [p.value.dtype for p in self.params]
        self._assign({**options, **self._initial_state(options)})

    @replayed
    def zero_grad(self):
        """Set every parameter's `.grad` to None."""
        for p in self.params:
            p.grad = None

    @replayed
    def step(self):
        """Update every parameter that has a `.grad`, in place.

        Hyperparameters, state, parameter values and gradients are all checked first:
        a bad one raises before any parameter, state array or step count changes.
        """
        options = self._current_options()
        ready = [(i, p, self._grad(i, p)) for i, p in enumerate(self.params)
                 if p.grad is not None]
        self._assign(self._checked_state() or self._initial_state(options))
        for i, p, grad in ready:
            self._update(i, p.value, grad, options)
            mark_modified(p)

    def replayed_step(self):
        """A function making `step()`'s updates, for fa.capture's replays: the full checks
        run on its first call and again whenever a hyperparameter, a state list or array,
        or a parameter's array changed since the last checked step; otherwise only the
        updates (gradients are checked for shape, dtype and layout)."""
        checked = None  # (what the last fully checked step saw, its options)

        def run():
            nonlocal checked
            if checked is None or checked[0] != self._signature():
                self.step()
                checked = (self._signature(), self._current_options())
                return
            options = checked[1]
            for i, p in enumerate(self.params):
                grad = p._grad
                if grad is None:
                    continue
                if not (grad.flags.c_contiguous and grad.flags.aligned
                        and grad.shape == self._shapes[i] and grad.dtype == self._dtypes[i]):
                    grad = self._grad(i, p)
                self._update(i, p._value, grad, options)
                mark_modified(p)
        return run

    def _signature(self):
        """What a checked step depends on: hyperparameter values, the identity of the
        state lists and their arrays, the types of the counts, the parameters' arrays."""
        def seen(attr, of):
            values = getattr(self, attr)
            return id(values), None if values is None else list(map(of, values))
        return ([getattr(self, name) for name in self.hyperparameters],
                [seen(attr, id) for attr in self.buffers.values()],
                [seen(attr, type) for attr in self.counts.values()],
                [id(p._value) for p in self.params])

    def state_dict(self):
        """Hyperparameters and state in torch.optim's layout, as copies (later steps do
        not change the returned dict): `{"state": {index: {key: value}},
        "param_groups": [{hyperparameter: value, "params": [0, 1, ...]}]}`."""
        options = self._current_options()
        state = self._checked_state()
        entries = {}
        if state:
            for i in range(len(self.params)):
                entry = {key: state[attr][i] for key, attr in self.counts.items()}
                entry.update((key, state[attr][i].copy()) for key, attr in self.buffers.items())
                entries[i] = entry
        return {"state": entries,
                "param_groups": [{**options, "params": list(range(len(self.params)))}]}

    def load_state_dict(self, state_dict):
        """Load hyperparameters and state saved by `state_dict()` (or `fa.save`d and
        `fa.load`ed: lists for tuples are fine), copying its arrays.

        Everything is checked first (keys, the parameter count, each array's shape and
        dtype against its parameter, the hyperparameters' values); a mismatch raises
        ValueError or TypeError and changes nothing. `state_dict` itself is not changed.
        A parameter missing from "state" starts from fresh state, as in PyTorch.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        group = self._loaded_group(state_dict, owner)
        options = self._checked_options({k: group[k] for k in self.hyperparameters},
                                        f"{owner}: param_groups[0]")
        state = (self._loaded_state(state_dict["state"], owner)
                 or self._initial_state(options))
        self._assign({**options, **state})

    def _assign(self, attributes):
        for name, value in attributes.items():
            setattr(self, name, value)

    # --- hyperparameters ----------------------------------------------------------------
    def _current_options(self):
        """The hyperparameter attributes, checked, as plain Python values."""
        values = {name: getattr(self, name) for name in self.hyperparameters}
        return self._checked_options(values, type(self).__name__)

    def _checked_options(self, values, owner):
        options = {name: check(owner, name, values[name])
                   for name, check in self.hyperparameters.items()}
        self._check_combination(options, owner)
        return options

    def _check_combination(self, options, owner):
        """Raise ValueError for hyperparameters that are valid alone but not together."""

    # --- state --------------------------------------------------------------------------
    def _needs_state(self, options):
        """Whether a step with these hyperparameters reads and writes state."""
        return True

    def _state_attributes(self):
        return [*self.counts.values(), *self.buffers.values()]

    def _initial_state(self, options):
        """Fresh state when a step with `options` needs state, else None for each."""
        if self._needs_state(options):
            return self._zero_state()
        return {attr: None for attr in self._state_attributes()}

    def _zero_state(self):
        """{attribute: a list of zero counts or zero arrays, one per parameter}."""
        state = {attr: [0] * len(self.params) for attr in self.counts.values()}
        state.update((attr, [np.zeros(s, d) for s, d in zip(self._shapes, self._dtypes)])
                     for attr in self.buffers.values())
        return state

    def _checked_state(self):
        """{attribute: list} of the current state, checked, with copies in the lists
        (new lists) where a kernel cannot use an array in place; {} if there is none."""
        name = type(self).__name__
        current = {attr: getattr(self, attr) for attr in self._state_attributes()}
        if all(values is None for values in current.values()):
            return {}
        state = {attr: self._checked_counts(name, attr, current[attr])
                 for attr in self.counts.values()}
        # Arrays the kernels must not write through: the parameters' and one another's.
        taken = {id(a) for p in self.params for a in (p.value, p.grad)}
        for attr in self.buffers.values():
            state[attr] = self._checked_buffers(name, attr, current[attr], taken)
        return state

    def _checked_counts(self, owner, attr, counts):
        _sequence(owner, attr, counts, len(self.params))
        if type(counts) is list and all(type(c) is int and 0 <= c < _MAX_COUNT
                                        for c in counts):
            return counts
        return [_count(owner, f"{attr}[{i}]", c) for i, c in enumerate(counts)]

    def _checked_buffers(self, owner, attr, buffers, taken):
        _sequence(owner, attr, buffers, len(self.params))
        checked, name = [], attr + "[{}]"
        for i, buffer in enumerate(buffers):
            self._check_buffer(owner, name, i, buffer)
            if id(buffer) in taken or not _owned_and_writable(buffer):
                buffer = np.array(buffer, order="C")
            taken.add(id(buffer))
            checked.append(buffer)
        return buffers if all(c is b for c, b in zip(checked, buffers)) else checked

    def _check_buffer(self, owner, name, i, buffer):
        """Raise unless `buffer` is an ndarray of params[i]'s dtype and shape; errors say
        f"{owner}: {name.format(i)}" (formatted only then: this runs at every step)."""
        if not isinstance(buffer, np.ndarray):
            raise TypeError(f"{owner}: {name.format(i)} must be an ndarray, "
                            f"got {type(buffer).__name__}")
        if buffer.dtype != self._dtypes[i]:
            raise TypeError(f"{owner}: {name.format(i)} has dtype {buffer.dtype}, "
                            f"params[{i}] has dtype {self._dtypes[i]}")
        if buffer.shape != self._shapes[i]:
            raise ValueError(f"{owner}: {name.format(i)} has shape {buffer.shape}, "
                             f"params[{i}] has shape {self._shapes[i]}")

    # --- load_state_dict ----------------------------------------------------------------
    def _loaded_group(self, state_dict, owner):
        """The one parameter group of `state_dict`, its keys and "params" checked."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"{owner}: expected a dict, got {type(state_dict).__name__}")
        problems = key_problems(["state", "param_groups"], state_dict)
        if problems:
            raise ValueError(f"{owner}: {problems}")
        groups = state_dict["param_groups"]
        if not isinstance(groups, (list, tuple)) or len(groups) != 1:
            raise ValueError(f"{owner}: param_groups must be a list of one group (fastad "
                             f"optimizers have one), got {groups!r}")
        group = groups[0]
        if not isinstance(group, dict):
            raise TypeError(f"{owner}: param_groups[0] must be a dict, "
                            f"got {type(group).__name__}")
        problems = key_problems([*self.hyperparameters, "params"], group)
        if problems:
            raise ValueError(f"{owner}: param_groups[0]: {problems}")
        indices, n = group["params"], len(self.params)
        if not isinstance(indices, (list, tuple)) or list(indices) != list(range(n)):
            raise ValueError(f"{owner}: param_groups[0]['params'] is {indices!r}, this "
                             f"optimizer has {n} parameters ({list(range(n))})")
        return group

    def _loaded_state(self, entries, owner):
        """Copies of the per-parameter state in `entries` ({} if empty), fresh state
        for the parameters it leaves out."""
        if not isinstance(entries, dict):
            raise TypeError(f"{owner}: state must be a dict, got {type(entries).__name__}")
        n = len(self.params)
        bad = [k for k in entries if isinstance(k, (bool, np.bool_))
               or not isinstance(k, numbers.Integral) or not 0 <= k < n]
        if bad:
            raise ValueError(f"{owner}: state has key(s) {', '.join(map(repr, bad))}; "
                             f"expected parameter indices 0..{n - 1}")
        if not entries:
            return {}
        keys = [*self.counts, *self.buffers]
        state = self._zero_state()
        for index, entry in entries.items():
            i, where = int(index), f"{owner}: state[{index!r}]"
            if not isinstance(entry, dict):
                raise TypeError(f"{where} must be a dict, got {type(entry).__name__}")
            problems = key_problems(keys, entry)
            if problems:
                raise ValueError(f"{where}: {problems}")
            for key, attr in self.counts.items():
                state[attr][i] = _count(where, repr(key), entry[key])
            for key, attr in self.buffers.items():
                self._check_buffer(owner, f"state[{index!r}][{key!r}]", i, entry[key])
                state[attr][i] = np.array(entry[key], order="C")
        return state

    # --- the update ---------------------------------------------------------------------
    def _grad(self, i, p):
        """p.grad as an array the kernels can read (C-contiguous, p's dtype and shape)."""
        value, grad = p.value, p.grad
        if not (isinstance(value, np.ndarray) and value.flags.c_contiguous
                and value.flags.writeable and value.flags.aligned
                and value.shape == self._shapes[i] and value.dtype == self._dtypes[i]):
            raise ValueError(f"{type(self).__name__}: params[{i}].value was replaced by an "
                             "array of another shape, dtype or layout; update it in place")
        check_matches(grad, value, f"{type(self).__name__}: params[{i}].grad")
        return grad if grad.flags.c_contiguous and grad.flags.aligned \
            else np.array(grad, order="C")

    def _update(self, i, value, grad, options):
        """Update params[i]'s value (and its state) in place from its checked gradient."""
        raise NotImplementedError

    def __repr__(self):
        options = ", ".join(f"{k}={getattr(self, k, None)}" for k in self.hyperparameters)
        return f"{type(self).__name__}({len(self.params)} parameters, {options})"
