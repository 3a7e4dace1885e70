"""fa.optim.lr_scheduler against torch.optim.lr_scheduler: trajectories, state_dict,
resuming, and errors."""
import math

import numpy as np
import pytest

import fastad as fa
from fastad.optim import lr_scheduler

STEPS = 100


class Warmup:
    """A callable object: LambdaLR saves its attributes (a function it cannot save)."""

    def __init__(self, epochs):
        self.epochs = epochs

    def __call__(self, epoch):
        return min(1.0, (epoch + 1) / self.epochs)


SCHEDULES = {
    "StepLR": ("StepLR", dict(step_size=7, gamma=0.5)),
    "StepLR-default-gamma": ("StepLR", dict(step_size=30)),
    "Cosine": ("CosineAnnealingLR", dict(T_max=25)),  # 100 steps: two full cycles
    "Cosine-eta_min": ("CosineAnnealingLR", dict(T_max=40, eta_min=0.01)),
    "Lambda": ("LambdaLR", dict(lr_lambda=lambda epoch: 0.95 ** epoch)),
    "Lambda-object": ("LambdaLR", dict(lr_lambda=Warmup(10))),
}


def fastad_optimizer(optimizer="SGD", lr=0.1):
    return getattr(fa.optim, optimizer)([fa.Parameter(np.zeros(2))], lr=lr)


def torch_optimizer(torch, optimizer="SGD", lr=0.1):
    return getattr(torch.optim, optimizer)([torch.zeros(2, requires_grad=True)], lr=lr)


@pytest.mark.parametrize("case", SCHEDULES)
@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_trajectory_and_state_dict_match_torch(torch, case, optimizer):
    name, kwargs = SCHEDULES[case]
    opt, reference_opt = fastad_optimizer(optimizer), torch_optimizer(torch, optimizer)
    ours = getattr(lr_scheduler, name)(opt, **kwargs)
    theirs = getattr(torch.optim.lr_scheduler, name)(reference_opt, **kwargs)
    for _ in range(STEPS):
        assert ours.get_last_lr() == theirs.get_last_lr()  # the same float arithmetic
        assert opt.lr == ours.get_last_lr()[0]
        assert ours.last_epoch == theirs.last_epoch
        mine, torchs = ours.state_dict(), theirs.state_dict()
        assert list(mine) == list(torchs) and mine == torchs
        opt.step()
        reference_opt.step()
        ours.step()
        theirs.step()
    assert ours.last_epoch == STEPS


def test_cosine_follows_the_closed_form():
    opt = fastad_optimizer(lr=0.2)
    schedule = lr_scheduler.CosineAnnealingLR(opt, T_max=30, eta_min=0.02)
    for epoch in range(1, 61):
        schedule.step()
        expected = 0.02 + (0.2 - 0.02) * (1 + math.cos(math.pi * epoch / 30)) / 2
        assert opt.lr == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_step_lr_is_recursive_on_the_optimizers_lr_as_torch():
    opt = fastad_optimizer(lr=1.0)
    schedule = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    schedule.step()
    opt.lr = 10.0  # changed by hand: the schedule goes on from it
    schedule.step()
    assert opt.lr == 5.0 and schedule.get_last_lr() == [5.0]


@pytest.mark.parametrize("case", SCHEDULES)
def test_state_dict_resumes_a_fresh_scheduler(tmp_path, case):
    name, kwargs = SCHEDULES[case]
    opt = fastad_optimizer()
    schedule = getattr(lr_scheduler, name)(opt, **kwargs)
    for _ in range(37):
        schedule.step()
    fa.save(tmp_path / "ckpt", {"optim": opt.state_dict(), "sched": schedule.state_dict()})
    expected = []
    for _ in range(30):
        schedule.step()
        expected.append(opt.lr)

    loaded = fa.load(tmp_path / "ckpt")
    fresh = fastad_optimizer(lr=0.5)
    kwargs = dict(kwargs, lr_lambda=Warmup(1)) if case == "Lambda-object" else kwargs
    resumed = getattr(lr_scheduler, name)(fresh, **kwargs)
    fresh.load_state_dict(loaded["optim"])
    resumed.load_state_dict(loaded["sched"])
    assert resumed.state_dict() == loaded["sched"]
    got = []
    for _ in range(30):
        resumed.step()
        got.append(fresh.lr)
    assert got == expected


def test_lambda_lr_saves_what_torch_saves(torch):
    opt = fastad_optimizer()
    assert lr_scheduler.LambdaLR(opt, lambda e: 1.0).state_dict()["lr_lambdas"] == [None]
    warmup = Warmup(10)
    saved = lr_scheduler.LambdaLR(opt, [warmup]).state_dict()
    assert saved["lr_lambdas"] == [{"epochs": 10}]
    assert saved == torch.optim.lr_scheduler.LambdaLR(torch_optimizer(torch), warmup).state_dict()


def test_torchs_state_dict_loads(torch):
    reference_opt = torch_optimizer(torch)
    theirs = torch.optim.lr_scheduler.StepLR(reference_opt, step_size=3)
    for _ in range(7):
        reference_opt.step()
        theirs.step()
    ours = lr_scheduler.StepLR(fastad_optimizer(), step_size=5)
    ours.load_state_dict(theirs.state_dict())
    assert ours.state_dict() == theirs.state_dict()


@pytest.mark.parametrize("make, error, pattern", [
    (lambda opt: lr_scheduler.StepLR(opt, 0), ValueError, "StepLR: Invalid step_size: 0"),
    (lambda opt: lr_scheduler.StepLR(opt, 2.5), TypeError, "StepLR: step_size must be an int"),
    (lambda opt: lr_scheduler.StepLR(opt, 2, gamma="x"), TypeError, "StepLR: gamma"),
    (lambda opt: lr_scheduler.CosineAnnealingLR(opt, 0), ValueError, "CosineAnnealingLR.*T_max"),
    (lambda opt: lr_scheduler.LambdaLR(opt, 0.5), TypeError, "LambdaLR: lr_lambda"),
    (lambda opt: lr_scheduler.LambdaLR(opt, [abs, abs]), ValueError, "LambdaLR: expected 1"),
    (lambda opt: lr_scheduler.LambdaLR(opt, lambda e: -1.0), ValueError,
     "LambdaLR: Invalid lr for epoch 0"),
    (lambda opt: lr_scheduler.StepLR(object(), 2), TypeError, "StepLR: object is not"),
])
def test_bad_arguments_name_the_class_and_value(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make(fastad_optimizer())


@pytest.mark.parametrize("change, error, pattern", [
    (lambda d: d.pop("gamma"), ValueError, "missing key.*'gamma'"),
    (lambda d: d.update(extra=1), ValueError, "unexpected key.*'extra'"),
    (lambda d: d.update(last_epoch=-3), ValueError, "last_epoch"),
    (lambda d: d.update(base_lrs=[0.1, 0.2]), ValueError, "base_lrs"),
    (lambda d: d.update(_last_lr=["x"]), TypeError, r"_last_lr\[0\]"),
    (lambda d: d.update(step_size=0), ValueError, "step_size"),
])
def test_load_state_dict_checks_everything_first(change, error, pattern):
    schedule = lr_scheduler.StepLR(fastad_optimizer(), step_size=3)
    schedule.step()
    before = schedule.state_dict()
    bad = schedule.state_dict()
    change(bad)
    with pytest.raises(error, match=f"StepLR.load_state_dict: .*{pattern}"):
        schedule.load_state_dict(bad)
    assert schedule.state_dict() == before


def test_a_failed_step_changes_nothing():
    opt = fastad_optimizer(lr=0.1)
    schedule = lr_scheduler.LambdaLR(opt, lambda epoch: 1.0 if epoch < 2 else -1.0)
    schedule.step()
    before = schedule.state_dict()
    with pytest.raises(ValueError, match="LambdaLR: Invalid lr for epoch 2: -0.1"):
        schedule.step()
    assert schedule.state_dict() == before and opt.lr == 0.1


def test_lr_scheduler_imports_as_in_torch():
    import fastad.optim.lr_scheduler
    from fastad.optim.lr_scheduler import StepLR
    assert fa.optim.lr_scheduler is fastad.optim.lr_scheduler and StepLR is lr_scheduler.StepLR
