"""`ClassifierModule`'s training metrics (issue #15 item 12): train accuracy is a torchmetrics
`MulticlassAccuracy` (micro average), logged once per epoch, equal to correct / samples over that
epoch's batches as the module saw them; the loss is the epoch's batch-size-weighted mean (what
Lightning's per-step `self.log` gave before the module accumulated it itself, issue "Zoo throughput")."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers.logger import Logger
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import MulticlassAccuracy

from bench.nets import build_model
from bench.training import ClassifierModule, OptimizerConfig, ScheduleConfig, TrainerConfig, fit
from datamodules import DataConfig, SplitSizes, build_datamodule


class RecordingLogger(Logger):
    """A Lightning logger that keeps every `log_metrics` call in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.calls.append(dict(metrics))


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.Tensor, torch.Tensor, Any]:
    tmp = tmp_path_factory.mktemp("training")
    dm = build_datamodule(DataConfig(name="digits", splits=SplitSizes(owner=150, attacker=10, independent=10, test=None)),
                          data_dir=str(tmp), seed=0)
    dm.setup()
    x, y = dm.tensors("owner")
    return x, y, dm


@pytest.mark.parametrize("soft", [False, True], ids=["hard_labels", "soft_labels"])
def test_logged_train_accuracy_equals_correct_over_samples_per_epoch(digits, tmp_path, soft):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x, y, dm = digits
    targets = F.one_hot(y, dm.num_classes).float() * 0.8 + 0.02 if soft else y  # soft: argmax is still y
    # 150 samples in batches of 64: 64, 64, 22, so a plain mean of batch accuracies would differ
    loader = DataLoader(TensorDataset(x, targets), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    model = build_model("convnet", in_channels=dm.in_channels, num_classes=dm.num_classes, image_size=dm.image_size,
                        mean=dm.mean, std=dm.std, seed=0)
    module = ClassifierModule(model, OptimizerConfig(lr=0.05), ScheduleConfig(name="none"), epochs=3)
    assert isinstance(module.train_accuracy, MulticlassAccuracy) and module.train_accuracy.average == "micro"
    seen: list[torch.Tensor] = []  # per forward: [correct, samples], in training order
    hard = {}

    def record(_module: Any, inputs: tuple[torch.Tensor], logits: torch.Tensor) -> None:
        n = len(inputs[0])
        labels = hard["y"][:n]
        seen.append(torch.tensor([int((logits.argmax(1) == labels).sum()), n]))

    original_step = module.training_step

    losses: list[tuple[float, int]] = []  # per step: (loss, batch size)

    def training_step(batch: Any, batch_idx: int) -> torch.Tensor:
        hard["y"] = batch[1].argmax(1) if soft else batch[1]
        loss = original_step(batch, batch_idx)
        losses.append((float(loss), len(batch[1])))
        return loss

    module.training_step = training_step
    model.register_forward_hook(record)
    logger = RecordingLogger()
    try:
        fit(module, loader, TrainerConfig(enable_progress_bar=False, log_every_n_steps=1), root_dir=str(tmp_path),
            seed=0, logger=logger, progress=False)
    finally:
        torch.set_num_threads(threads)
    logged = [c["train/acc"] for c in logger.calls if "train/acc" in c]
    assert len(logged) == 3, logger.calls  # once per epoch, never per step
    assert all("train/acc" not in c or "epoch" in c for c in logger.calls)
    per_epoch = torch.stack(seen).view(3, 3, 2).sum(dim=1)  # 3 epochs x 3 batches x [correct, samples]
    assert per_epoch[:, 1].tolist() == [150, 150, 150]
    expected = (per_epoch[:, 0] / per_epoch[:, 1]).tolist()
    assert logged == pytest.approx(expected, abs=1e-6)
    assert expected[-1] > expected[0]  # it trained: the numbers move, so equality is not vacuous
    # the loss: Lightning's on_epoch mean, weighted by batch size (64, 64, 22), once an epoch
    logged_loss = [c["train/loss"] for c in logger.calls if "train/loss" in c]
    per_epoch_loss = [sum(loss * n for loss, n in losses[e * 3:(e + 1) * 3]) / 150 for e in range(3)]
    assert logged_loss == pytest.approx(per_epoch_loss, rel=1e-5)
    assert per_epoch_loss[-1] < per_epoch_loss[0]


def test_progress_off_a_terminal_is_one_line_per_epoch(digits, tmp_path, caplog, capsys):
    """Written to a file, a fit's progress is `epoch k/n: loss .., acc ..` lines, not a redrawn bar; on a
    terminal Lightning's bar stays; and `fpbench` makes tqdm bars redraw rarely when stderr is a file."""
    import logging
    import os

    from bench.entry import BAR_SECONDS_OFF_TERMINAL, calm_bars_off_terminal
    from bench.epoch_lines import EpochLines, progress_callbacks

    x, y, dm = digits
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    model = build_model("mlp", in_channels=dm.in_channels, num_classes=dm.num_classes, image_size=dm.image_size,
                        mean=dm.mean, std=dm.std, seed=0)
    module = ClassifierModule(model, OptimizerConfig(lr=0.05), ScheduleConfig(name="none"), epochs=3)
    with caplog.at_level(logging.INFO, logger="bench.training"):
        fit(module, loader, TrainerConfig(enable_progress_bar=True), root_dir=str(tmp_path), seed=0)  # pytest: no tty
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("  epoch ")]
    assert [line.split(":")[0].strip() for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all("loss " in line and "acc " in line for line in lines)
    assert "it/s" not in capsys.readouterr().out  # no bar drawn
    assert progress_callbacks(True, terminal=True) == (True, [])
    bar, callbacks = progress_callbacks(True, terminal=False)
    assert not bar and isinstance(callbacks[0], EpochLines) and progress_callbacks(False) == (False, [])

    class File:
        def isatty(self) -> bool:
            return False

    saved = os.environ.pop("TQDM_MININTERVAL", None)
    try:
        assert calm_bars_off_terminal(File()) and os.environ["TQDM_MININTERVAL"] == str(BAR_SECONDS_OFF_TERMINAL)
        os.environ["TQDM_MININTERVAL"] = "1"
        assert not calm_bars_off_terminal(File()) and os.environ["TQDM_MININTERVAL"] == "1"  # the user's setting kept
    finally:
        os.environ.pop("TQDM_MININTERVAL", None)
        if saved is not None:
            os.environ["TQDM_MININTERVAL"] = saved
