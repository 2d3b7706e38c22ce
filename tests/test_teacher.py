"""The CNN teacher learns, resumes by epoch, and pulls a distilled student towards its outputs."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

import custom_modules.training.teacher
from custom_modules.training.data import split_mnist
from custom_modules.training.robust import RobustCheck, RobustConfig, finetune_robust
from custom_modules.training.style import StyleAugment, augment_batch
from custom_modules.training.teacher import (
    DigitCNN,
    TeacherConfig,
    distillation_loss,
    train_teacher,
)
from custom_modules.vision_transformer import VisionTransformer, ViTConfig
from tests.test_pipeline import synthetic_mnist


@pytest.fixture(scope="module")
def data():
    return split_mnist(synthetic_mnist(n_train=400), val_size=100)


def test_distillation_loss_is_zero_only_where_the_student_agrees() -> None:
    teacher = torch.tensor([[3.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    assert distillation_loss(teacher, teacher, 2.0).item() == pytest.approx(0, abs=1e-6)
    other = torch.tensor([[0.0, 3.0, -1.0], [2.0, 0.0, 0.0]])
    assert distillation_loss(other, teacher, 2.0).item() > 0.1
    # a step down its gradient brings the student's outputs nearer the teacher's
    student = torch.zeros_like(teacher, requires_grad=True)
    loss = distillation_loss(student, teacher, 2.0)
    loss.backward()
    assert distillation_loss(student.detach() - student.grad, teacher, 2.0) < loss


def test_teacher_learns_and_resumes_after_each_epoch(data, tmp_path: Path, capsys) -> None:
    assert 0.4e6 < sum(p.numel() for p in DigitCNN().parameters()) < 0.5e6
    state = tmp_path / "teacher.pt"
    config = TeacherConfig(epochs=2, batch_size=32)
    one, history = train_teacher(data, replace(config, epochs=1), state)
    assert len(history) == 1
    # a longer schedule is another recipe: afresh; the same one goes on from its saved epoch
    teacher, history = train_teacher(data, config, state)
    assert "afresh" in capsys.readouterr().out and [h["epoch"] for h in history] == [1, 2]
    again, history = train_teacher(data, config, state)
    assert "going on from there" in capsys.readouterr().out and len(history) == 2
    assert not again.training
    for name, weights in teacher.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], weights)
    assert history[-1]["val_clean_accuracy"] > 0.5  # 10 classes: chance is 0.1

    state.write_bytes(b"not a state")
    train_teacher(data, replace(config, epochs=1), state)
    assert "cannot read the saved teacher" in capsys.readouterr().out


def test_the_teacher_recipe_records_a_style_only_when_it_is_not_the_default() -> None:
    # states saved before the style was a field have none in their setup, and still resume
    assert "style" not in TeacherConfig().setup()
    mixed = TeacherConfig(style=StyleAugment(plain_p=0.5)).setup()
    assert mixed["style"]["plain_p"] == 0.5 and mixed["epochs"] == TeacherConfig.epochs


def test_the_teacher_trains_on_the_style_its_recipe_gives(data, tmp_path, monkeypatch) -> None:
    seen = []

    def spy(images, style, generator, labels=None):
        seen.append((style, labels))
        return augment_batch(images, style, generator, labels)

    monkeypatch.setattr(custom_modules.training.teacher, "augment_batch", spy)
    style = StyleAugment(continental_p=0.5, plain_p=0.5)
    train_teacher(data, TeacherConfig(epochs=1, batch_size=200, style=style), tmp_path / "t.pt")
    assert seen and all(s == style for s, _ in seen)
    # the labels go along, so that the continental forms reach the 1s and 7s
    assert all(labels is not None and len(labels) > 0 for _, labels in seen)


class AlwaysThree(torch.nn.Module):
    """A teacher sure that every digit is a 3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.full((len(x),), 3), 10).float() * 20


def test_distillation_pulls_the_student_towards_the_teacher(data, tmp_path: Path) -> None:
    check = RobustCheck.make(data, torch.rand(20, 1, 28, 28))
    inputs = lambda: (torch.rand(50, 1, 28, 28), check)  # noqa: E731
    config = RobustConfig(epochs=2, lr=3e-3, batch_size=32, non_digit_batch=4, ema_decay=0.5)

    def threes(distill_weight: float, teacher) -> float:
        torch.manual_seed(0)
        student = VisionTransformer(ViTConfig(emb_dim=16, num_heads=2, n_layers=1, dropout=0.0))
        tuned, _ = finetune_robust(
            student,
            data,
            inputs,
            replace(config, distill_weight=distill_weight),
            tmp_path / f"state-{distill_weight}.pt",
            on_epoch=lambda record: None,
            teacher=teacher,
        )
        return (tuned(check.clean).argmax(1) == 3).float().mean().item()

    assert threes(0.9, AlwaysThree()) > threes(0.0, None) + 0.3
    with pytest.raises(ValueError, match="needs a teacher"):
        threes(0.5, None)
