"""Each learning-rate schedule's curve, number by number: warmup shape, floor, restarts, plateau."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from hpo.training.config import TrainConfig
from hpo.training.schedule import LrSchedule, lr_factor, warmup_length


def curve(total: int = 100, spe: float = 10, **kw) -> list[float]:
    cfg = TrainConfig(lr=1.0, **kw)
    return [lr_factor(cfg, s, total, spe) for s in range(total)]


def torch_curve(scheduler_cls, total: int, **kw) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = scheduler_cls(opt, **kw)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_linear_and_cosine_warmup_shapes_then_cosine_to_the_floor() -> None:
    lin = curve(warmup="linear", warmup_steps=10, min_lr=0.01)
    assert lin[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    cos = curve(warmup="cosine", warmup_steps=10, min_lr=0.01)
    assert cos[:10] == pytest.approx([0.5 * (1 - math.cos(math.pi * (s + 1) / 10))
                                      for s in range(10)])
    assert cos[4] < lin[4]  # cosine warmup starts slower
    assert lin[10] == pytest.approx(1.0) and lin[-1] == pytest.approx(0.01)
    assert all(a <= b for a, b in itertools.pairwise(lin[:10]))  # rises through warmup
    assert all(a >= b for a, b in itertools.pairwise(lin[9:]))  # monotone decay after warmup


@pytest.mark.parametrize("mult", [2, 3, 10])
def test_cosine_restarts_equals_torch_for_every_t_mult(mult: int) -> None:
    total = 10 + 10 * mult + 10 * mult**2 + 5
    ours = curve(total=total, spe=10, scheduler="cosine_restarts", restart_epochs=1,
                 restart_mult=mult, min_lr=0.05)
    ref = torch_curve(torch.optim.lr_scheduler.CosineAnnealingWarmRestarts, total, T_0=10,
                      T_mult=mult, eta_min=0.05)
    assert ours == pytest.approx(ref, abs=1e-9)
    restarts = [10, 10 + 10 * mult, 10 + 10 * mult + 10 * mult**2]
    assert [s for s in range(1, total) if ours[s] > ours[s - 1]] == restarts
    assert all(ours[s] == pytest.approx(1.0) for s in restarts)


def test_warmup_steps_zero_takes_its_length_from_the_ratio() -> None:
    cfg = TrainConfig(warmup="linear", warmup_steps=0, warmup_ratio=0.2)
    assert warmup_length(cfg, total_steps=50) == 10
    assert curve(total=50, warmup="linear", warmup_ratio=0.2)[:10] == pytest.approx(
        [(s + 1) / 10 for s in range(10)])
    assert warmup_length(TrainConfig(warmup="none", warmup_ratio=0.2), 50) == 0
    with pytest.raises(ValueError, match="warmup_steps, warmup_epochs or warmup_ratio > 0"):
        TrainConfig(warmup="linear", warmup_steps=0, warmup_ratio=0)


def test_warmup_epochs_count_mean_steps_per_epoch_before_the_ratio() -> None:
    cfg = TrainConfig(warmup="linear", warmup_epochs=1.5, warmup_ratio=0.5, epochs=10)
    assert warmup_length(cfg, total_steps=200) == 30  # 1.5 epochs of 20 steps
    assert warmup_length(cfg.model_copy(update={"warmup_steps": 7}), 200) == 7
    assert curve(total=100, spe=10, warmup="linear", warmup_epochs=2)[:20] == pytest.approx(
        [(s + 1) / 20 for s in range(20)])


def test_cosine_restarts_equals_torch_and_restarts_at_t0_times_mult() -> None:
    ours = curve(total=70, spe=10, scheduler="cosine_restarts", restart_epochs=1,
                 restart_mult=2, min_lr=0.05)
    ref = torch_curve(torch.optim.lr_scheduler.CosineAnnealingWarmRestarts, 70, T_0=10,
                      T_mult=2, eta_min=0.05)
    assert ours == pytest.approx(ref, abs=1e-9)
    assert [s for s in range(1, 70) if ours[s] > ours[s - 1]] == [10, 30]  # restarts


def test_cyclic_equals_torch_triangular() -> None:
    ours = curve(total=60, spe=10, scheduler="cyclic", cycle_epochs=2, min_lr=0.1)
    ref = torch_curve(torch.optim.lr_scheduler.CyclicLR, 60, base_lr=0.1, max_lr=1.0,
                      step_size_up=10, cycle_momentum=False)
    assert ours == pytest.approx(ref, abs=1e-9)


def test_step_and_exponential_decay_per_epoch_down_to_the_floor() -> None:
    step = curve(total=100, spe=10, scheduler="step", step_size=2, gamma=0.5, min_lr=0.2)
    assert step[0] == step[19] == 1.0 and step[20] == 0.5 and step[40] == 0.25
    assert step[60] == step[99] == 0.2
    exp = curve(total=100, spe=10, scheduler="exponential", gamma=0.5, min_lr=0.01)
    assert exp[10] == pytest.approx(0.5) and exp[25] == pytest.approx(0.5**2.5)
    assert exp[-1] == pytest.approx(max(0.01, 0.5**9.9))


def test_onecycle_rises_from_lr_over_25_and_anneals_to_min_lr() -> None:
    lrs = curve(total=100, scheduler="onecycle", warmup_ratio=0.3, min_lr=1e-4)
    peak = max(range(100), key=lrs.__getitem__)
    assert lrs[0] == pytest.approx(1 / 25 + (1 - 1 / 25) / 30)
    assert peak == 29 and lrs[peak] == pytest.approx(1.0) and lrs[-1] == pytest.approx(1e-4)


def test_plateau_reduces_after_patience_respects_floor_and_survives_state_dict() -> None:
    cfg = TrainConfig(lr=1.0, scheduler="plateau", plateau_factor=0.5, plateau_patience=1,
                      min_lr=0.2, warmup="linear", warmup_steps=2)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = LrSchedule(cfg, opt, total_steps=20, steps_per_epoch=2)
    seen = []
    for loss in [1.0] * 8:  # never improves
        for _ in range(2):
            seen.append(opt.param_groups[0]["lr"])
            sched.step()
        sched.end_epoch(loss)
    assert seen[:2] == [0.5, 1.0]  # warmup
    assert seen[2::2] == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)  # floor
    opt2 = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    restored = LrSchedule(cfg, opt2, total_steps=20, steps_per_epoch=2)
    opt2.load_state_dict(opt.state_dict())
    restored.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.2)
    assert restored.plateau.num_bad_epochs == sched.plateau.num_bad_epochs


def test_progressive_batch_stages_scale_the_learning_rate() -> None:
    cfg = TrainConfig(epochs=4, batch_size=8, batch_stages=2, batch_growth=2,
                      stage_lr_scaling="linear")
    assert [cfg.stage_of(e) for e in range(4)] == [0, 0, 1, 1]
    assert cfg.stage_batch_size(1) == 16 and cfg.stage_lr_scale(1) == 2.0
    assert TrainConfig(stage_lr_scaling="sqrt").stage_lr_scale(2) == pytest.approx(2.0)
