"""Lightning training for every model in a zoo: sources, negatives, pools and removal attacks.

One `ClassifierModule` covers plain training, last-layer-only training (frozen features, BatchNorm
statistics included), soft-label distillation and PGD adversarial training, so every model of a zoo
goes through the same Trainer path and honours `compute.trainer` (devices, strategy, precision).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, RandomSampler
from torchmetrics.classification import MulticlassAccuracy

from bench.epoch_lines import progress_callbacks
from bench.modes import eval_mode
from bench.training_config import (  # noqa: F401  (the recipe-side half, light to import; re-exported here)
    ACCELERATOR_ALIASES,
    MAX_EPOCHS,
    MEMORY_FORMATS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    SEED_MAX,
    TRAINABLE,
    OptimizerConfig,
    PGDConfig,
    ScheduleConfig,
    TrainerConfig,
    accelerator_names,
    check_seed,
    several_devices,
    validate_trainer,
    validate_training,
)

log = logging.getLogger(__name__)


class NonFiniteTrainingError(RuntimeError):
    """Training produced a non-finite loss or non-finite weights (diverged); the model must not be kept."""


def check_finite_model(model: nn.Module, what: str = "the model") -> None:
    """Raise NonFiniteTrainingError naming the first parameter or floating buffer holding inf or nan."""
    tensors = [*model.named_parameters(), *((n, b) for n, b in model.named_buffers() if b.is_floating_point())]
    for name, tensor in tensors:
        if not bool(torch.isfinite(tensor).all()):
            raise NonFiniteTrainingError(f"{what} has non-finite values (inf or nan) in '{name}'")


def pgd_attack(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: PGDConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Untargeted L-inf PGD; returns adversarial inputs in [0,1] within `eps` of `x`."""
    step = cfg.step_size if cfg.step_size is not None else 2.5 * cfg.eps / max(cfg.steps, 1)
    x_adv = x.detach().clone()
    if cfg.random_start:
        noise = torch.rand(x.shape, generator=generator, device=x.device) if generator is not None else torch.rand_like(x)
        x_adv = (x_adv + (noise * 2 - 1) * cfg.eps).clamp(0, 1)
    for _ in range(cfg.steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(x_adv), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + step * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - cfg.eps), x + cfg.eps).clamp(0, 1)
    return x_adv.detach()


class ClassifierModule(pl.LightningModule):
    """Trains a `Classifier` with cross-entropy (hard labels) or distillation (soft labels).

    Args:
        model: the network (a `bench.nets.Classifier`).
        optimizer, schedule, epochs: the training recipe.
        trainable: "all" or "head" (features frozen: no gradients and BatchNorm in eval mode).
        temperature: soft-label distillation temperature (targets given as probabilities).
        adversarial: PGD settings for adversarial training, or None.

    Logs per epoch: `train/loss` and `train/acc` (a torchmetrics `MulticlassAccuracy`, micro average =
    correct / samples over the epoch's batches, synced across DDP ranks; soft labels count their
    argmax). The metric reads detached logits and draws no random numbers, so it never changes what
    is trained. There is no validation step: zoo models are checked on the test split after training.
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerConfig, schedule: ScheduleConfig, epochs: int,
                 trainable: str = "all", temperature: float = 1.0, adversarial: PGDConfig | None = None) -> None:
        super().__init__()
        if trainable not in TRAINABLE:
            raise ValueError(f"trainable='{trainable}' is not one of {', '.join(TRAINABLE)}.")
        self.model = model
        self.optimizer_cfg = optimizer
        self.schedule_cfg = schedule
        self.epochs_requested = int(epochs)  # 0 is allowed (e.g. prune without fine-tuning)
        self.epochs = max(int(epochs), 1)
        self.trainable = trainable
        self.temperature = float(temperature)
        self.adversarial = adversarial
        # micro = correct / samples (plain accuracy, needs no class count); no per-step argument checks (a device sync)
        self.train_accuracy = MulticlassAccuracy(average="micro", validate_args=False)
        self._epoch_loss_sum = torch.zeros(())  # this epoch's sum of loss x batch size (reset each epoch)
        self._epoch_samples = 0
        if trainable == "head":
            for name, param in model.named_parameters():
                param.requires_grad_(name.startswith("head."))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_start(self) -> None:
        self.model.train()  # Lightning keeps the mode a model arrives in; a loaded model arrives in eval

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.trainable == "head":  # frozen layers keep their BatchNorm statistics too
            self.model.features.eval()

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dtype.is_floating_point:  # soft labels: distillation (Hinton et al.), scaled by T^2
            t = self.temperature
            return -(target * F.log_softmax(logits / t, dim=1)).sum(dim=1).mean() * t * t
        return F.cross_entropy(logits, target)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, target = batch
        if self.adversarial is not None:
            n_adv = int(round(self.adversarial.adv_ratio * x.shape[0]))
            if n_adv > 0:
                hard = target.argmax(dim=1) if target.dtype.is_floating_point else target
                with eval_mode(self.model):  # craft against fixed BatchNorm statistics; frozen layers stay frozen
                    x_adv = pgd_attack(self.model, x[:n_adv], hard[:n_adv], self.adversarial)
                x = torch.cat([x_adv, x[n_adv:]])
        logits = self.model(x)
        loss = self._loss(logits, target)
        if not bool(torch.isfinite(loss)):  # diverged: every later step would only spread nan through the weights
            raise NonFiniteTrainingError(f"the training loss is {float(loss.detach())} at epoch {self.current_epoch}, batch "
                                         f"{batch_idx} (optimizer {self.optimizer_cfg.name}, lr {self.optimizer_cfg.lr})")
        hard = target.argmax(dim=1) if target.dtype.is_floating_point else target
        # Accumulated here and logged once an epoch (`on_train_epoch_end`): a `self.log` call costs Lightning
        # ~0.5 ms (it moves its whole result state to the value's device), a quarter of an MLP's step.
        self._epoch_loss_sum += loss.detach().float() * x.shape[0]  # Lightning's on_epoch mean, weighted by batch size
        self._epoch_samples += x.shape[0]
        self.train_accuracy.update(logits.detach(), hard)
        return loss

    def on_train_epoch_start(self) -> None:
        self._epoch_loss_sum = torch.zeros((), device=self.device)
        self._epoch_samples = 0

    def on_train_epoch_end(self) -> None:
        """Log the epoch's `train/loss` (sample-weighted mean over this rank's batches, as Lightning's on_epoch
        mean) and `train/acc` (synced across DDP ranks by torchmetrics), then reset the accuracy."""
        accuracy = self.train_accuracy.compute()
        self.train_accuracy.reset()
        loss = self._epoch_loss_sum / max(self._epoch_samples, 1)
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=1)
        self.log("train/acc", accuracy, prog_bar=True, on_step=False, on_epoch=True, batch_size=1)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        cfg = self.optimizer_cfg
        if cfg.name == "sgd":
            opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                                  weight_decay=cfg.weight_decay)
        elif cfg.name == "adam":
            opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if self.schedule_cfg.name == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs)
        elif self.schedule_cfg.name == "multistep":
            sched = torch.optim.lr_scheduler.MultiStepLR(
                opt, milestones=list(self.schedule_cfg.milestones), gamma=self.schedule_cfg.gamma)
        else:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class ReleaseSpawnedProcessGroup(pl.Callback):
    """Destroy the process group at the end of a spawn-based fit, inside each spawned rank.

    A spawned rank exits right after its fit; left to the interpreter's exit, gloo's process group
    is torn down while its threads still run, and about one exit in ten aborts ("terminate called
    without an active exception", SIGABRT), failing a fit that had finished. Ranks of other
    strategies keep their process group (the next fit reuses it).
    """

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        spawned = getattr(trainer.strategy.launcher, "_start_method", None) == "spawn"
        if spawned and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank is done with collectives before any rank leaves
            torch.distributed.destroy_process_group()


class InterruptRecorder(pl.Callback):
    """Remember the exception that stopped a fit, so `fit` can tell Ctrl-C from other exits.

    On a KeyboardInterrupt Lightning tears the fit down and calls ``sys.exit(1)`` itself, which
    would end the process before fpbench can say what was kept; `fit` turns that exit back into the
    KeyboardInterrupt it was (the CLI answers it with exit 130 and how to resume).
    """

    def __init__(self) -> None:
        self.exception: BaseException | None = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.exception = exception


def make_trainer(
    cfg: TrainerConfig, max_epochs: int, *, root_dir: str, logger: Any = False, progress: bool | None = None
) -> pl.Trainer:
    """A Trainer from `compute.trainer`: no checkpoints (the zoo saves safetensors itself).

    Progress: Lightning's bar on a terminal; one line per epoch when output goes to a file (`bench.epoch_lines`).
    """
    bar, lines = progress_callbacks(cfg.enable_progress_bar if progress is None else progress)
    return pl.Trainer(
        callbacks=[ReleaseSpawnedProcessGroup(), InterruptRecorder(), *lines],
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        num_nodes=cfg.num_nodes,
        precision=cfg.precision,
        deterministic=cfg.deterministic,
        max_epochs=max_epochs,
        logger=logger,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=bar,
        log_every_n_steps=cfg.log_every_n_steps,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=root_dir,
    )


def fit(module: ClassifierModule, loader: DataLoader, trainer_cfg: TrainerConfig, *, root_dir: str, seed: int,
        logger: Any = False, progress: bool | None = None) -> float:
    """Train `module` on `loader` for `module.epochs` epochs; returns wall seconds.

    After a spawn-based strategy the trained weights are back in `module.model` (Lightning copies them).

    Raises:
        NonFiniteTrainingError: a training step's loss was inf or nan, or a trained weight is.
    """
    start = time.perf_counter()
    if module.epochs_requested == 0:
        return 0.0
    pl.seed_everything(seed, workers=True, verbose=False)
    trainer = make_trainer(trainer_cfg, module.epochs, root_dir=root_dir, logger=logger, progress=progress)
    if getattr(trainer.strategy.launcher, "_start_method", None) == "spawn" and loader.generator is not None:
        loader = _without_generator(loader)  # a torch.Generator cannot be sent to spawned ranks (torch 2.14)
    module.model.to(memory_format=MEMORY_FORMATS[trainer_cfg.memory_format])  # 4-D weights only; values unchanged
    try:
        _fit_reraising_interrupt(trainer, module, loader)
    finally:
        module.model.to(memory_format=torch.contiguous_format)  # saved, attacked and queried as before
    module.model.cpu().eval()
    check_finite_model(module.model, "the trained model")
    return time.perf_counter() - start


def _fit_reraising_interrupt(trainer: pl.Trainer, module: ClassifierModule, loader: DataLoader) -> None:
    """`trainer.fit`, except that Ctrl-C raises KeyboardInterrupt instead of Lightning's ``sys.exit(1)``.

    Lightning also leaves SIGINT ignored after an interrupt; the handler in force before the fit is
    restored, so a later Ctrl-C in this process (a caller that goes on) still stops it.
    """
    handler = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(module, train_dataloaders=loader)
    except SystemExit as exit_:
        recorded = [cb.exception for cb in trainer.callbacks if isinstance(cb, InterruptRecorder)]
        if not any(isinstance(err, KeyboardInterrupt) for err in recorded):
            raise
        if handler is not None and threading.current_thread() is threading.main_thread():  # signals: main thread only
            signal.signal(signal.SIGINT, handler)
        log.debug("training interrupted (Lightning exited with %s); raising KeyboardInterrupt", exit_.code)
        raise KeyboardInterrupt from None


def _without_generator(loader: DataLoader) -> DataLoader:
    """The same loader without its shuffle generator; under DDP Lightning's DistributedSampler shuffles."""
    return DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=isinstance(loader.sampler, RandomSampler),
                      drop_last=loader.drop_last, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      persistent_workers=loader.persistent_workers, collate_fn=loader.collate_fn)


@torch.no_grad()
def predicted_labels(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Top-1 labels of `model` on `x` (eval mode; every submodule's mode restored), on the CPU."""
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.long)
    device = next(model.parameters()).device
    with eval_mode(model):
        return torch.cat([model(xb.to(device)).argmax(1).cpu() for xb in x.split(batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of `model` on tensors (x in [0,1]); restores every submodule's mode."""
    return int((predicted_labels(model, x, batch_size) == y.cpu()).sum()) / max(len(y), 1)
