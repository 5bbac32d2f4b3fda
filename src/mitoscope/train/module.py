"""The one training path: LightningModules around injected networks, and the Trainer they run in.

:class:`MitosisModule` trains the classifier (:class:`~mitoscope.classify.networks.MitosisNet`);
:class:`ScreenModule` trains the cascade screen (:func:`~mitoscope.classify.screen.build_screen_net`)
through the same training step and MF loss; :class:`AtypicalModule` fine-tunes the dedicated
atypical classifier (:func:`~mitoscope.classify.atypical.build_network`) and keeps its best
validation epoch; :func:`make_trainer` is the Trainer they all run in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

#: the MF losses (see :class:`MitosisModule`)
MF_LOSSES = ("hard", "agreement", "soft")


class MitosisModule(L.LightningModule):
    """Multi-task training of the MF head (+ atypical and subtype heads).

    Parameters
    ----------
    net : MitosisNet
        Built outside (``create_model``) and injected.
    lr, weight_decay : float
        AdamW settings; the learning rate follows cosine annealing over ``epochs``.
    epochs : int
    multitask : bool
        Add the atypical loss (MFs with an atypia label only, agreement-weighted, classes
        balanced with ``atypical_pos_weight``) to the MF loss (Fick et al.).
    atypical_weight : float
        Weight of the atypical loss.
    atypical_pos_weight : float
        ``n_normal / n_atypical`` of the training figures.
    subtype_weight : float
        Weight of the subtype cross-entropy (only if the network has a subtype head).
    mf_loss : {"hard", "agreement", "soft"}
        The MF loss: binary cross-entropy on the label (``hard``); the same weighted per sample
        by the raters' agreement with the label (``agreement``, Ji et al.'s weighted loss); or
        against the soft label, the share of raters calling it a mitotic figure (``soft``,
        regression on the agreement).
    freeze_bn : bool
        Keep every batch-norm layer in eval mode (running statistics frozen) while training:
        for fine-tuning, where batch statistics of the new data mix would otherwise drift away
        from what the network sees at inference (measured: ROC AUC 0.999 -> 0.88 in eval mode).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        *,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        epochs: int = 10,
        multitask: bool = True,
        atypical_weight: float = 0.5,
        atypical_pos_weight: float = 1.0,
        subtype_weight: float = 0.2,
        freeze_bn: bool = False,
        mf_loss: str = "hard",
    ) -> None:
        super().__init__()
        if mf_loss not in MF_LOSSES:
            raise ValueError(f"mf_loss must be one of {', '.join(MF_LOSSES)}, got {mf_loss!r}")
        self.mf_loss = mf_loss
        self.freeze_bn = bool(freeze_bn)
        self.net = net
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.multitask = multitask
        self.atypical_weight = atypical_weight
        self.atypical_pos_weight = atypical_pos_weight
        self.subtype_weight = subtype_weight

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.net(x, mask)

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["image"].contiguous(memory_format=torch.channels_last)
        out = self.net(x, batch["mask"])
        losses = {"mf": self._mf_loss(out["mf"].float(), batch)}
        lab = batch["atypical"]
        has = lab >= 0
        if self.multitask and bool(has.any()):
            w = batch["agreement"][has]
            pw = torch.tensor(self.atypical_pos_weight, device=w.device)
            per = F.binary_cross_entropy_with_logits(
                out["atypical"][has].float(), lab[has].float(), reduction="none", pos_weight=pw
            )
            losses["atypical"] = self.atypical_weight * (per * w).sum() / w.sum().clamp_min(1e-6)
        if "subtype" in out and self.multitask:
            st = batch["subtype"]
            ok = st >= 0
            if bool(ok.any()):
                losses["subtype"] = self.subtype_weight * F.cross_entropy(
                    out["subtype"][ok].float(), st[ok]
                )
        return losses

    def _mf_loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        y = batch["is_mf"]
        a = batch.get("mf_agreement")
        if self.mf_loss == "hard" or a is None:
            return F.binary_cross_entropy_with_logits(logits, y)
        a = a.to(logits.dtype)
        if self.mf_loss == "soft":  # share of raters who called it a mitotic figure
            return F.binary_cross_entropy_with_logits(logits, y * a + (1 - y) * (1 - a))
        per = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        return (per * a).sum() / a.sum().clamp_min(1e-6)

    def on_train_epoch_start(self) -> None:
        if self.freeze_bn:  # fine-tuning: keep the running statistics of the initial model
            for m in self.net.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.losses(batch)
        loss = sum(losses.values())
        for k, v in losses.items():
            self.log(f"loss_{k}", v, prog_bar=True, batch_size=len(batch["is_mf"]))
        return loss

    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.epochs))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class _ScreenAsMitosisNet(nn.Module):
    """The screening CNN (4 input channels: RGB + mask, one logit) behind the ``net(x, mask)``
    -> ``{"mf": logits}`` interface :class:`MitosisModule` trains."""

    def __init__(self, screen: nn.Module) -> None:
        super().__init__()
        self.screen = screen

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mf": self.screen(torch.cat([x, mask], 1))[:, 0]}


class ScreenModule(MitosisModule):
    """The cascade screen trained by :class:`MitosisModule`'s step (binary cross-entropy on the
    MF label, no other heads), with the screen's recipe: AdamW under a one-cycle learning rate
    over ``steps`` optimiser steps, and a per-patch brightness gain ``N(1, gain_sigma)`` and
    per-channel shift ``N(0, shift_sigma)`` of the RGB channels (on the device, after the
    batch is moved there; the mask channel is left alone).

    Parameters
    ----------
    screen : torch.nn.Module
        From :func:`~mitoscope.classify.screen.build_screen_net`; trained in place
        (``module.screen``).
    """

    def __init__(
        self,
        screen: nn.Module,
        *,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        steps: int = 1500,
        gain_sigma: float = 0.1,
        shift_sigma: float = 0.04,
    ) -> None:
        super().__init__(
            _ScreenAsMitosisNet(screen),
            lr=lr,
            weight_decay=weight_decay,
            epochs=1,
            multitask=False,
            mf_loss="hard",
        )
        self.steps = int(steps)
        self.gain_sigma = float(gain_sigma)
        self.shift_sigma = float(shift_sigma)

    @property
    def screen(self) -> nn.Module:
        return self.net.screen

    def brightness_jitter(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` (N, 3, H, W) in [0, 1] times a per-patch gain plus a per-channel shift."""
        n = image.shape[0]
        gain = 1.0 + self.gain_sigma * torch.randn((n, 1, 1, 1), device=image.device)
        shift = self.shift_sigma * torch.randn((n, 3, 1, 1), device=image.device)
        return (image * gain + shift).clamp_(0.0, 1.0)

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int):
        if self.trainer.training and (self.gain_sigma or self.shift_sigma):
            return dict(batch, image=self.brightness_jitter(batch["image"]))
        return batch

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=self.steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class AtypicalModule(L.LightningModule):
    """The dedicated atypical classifier's recipe: binary cross-entropy on the ``atypical``
    logit, weighted per crop (``batch["weight"]``: the experts' agreement, or 1) with
    ``pos_weight`` for the atypical class; AdamW under a per-step schedule that warms up
    linearly over ``warmup_steps`` and then decays by a cosine over the rest of
    ``steps_per_epoch * epochs``. After every validation pass (``(patches uint8 NHWC, label)``
    batches) the epoch's record goes to :attr:`history` (and to ``report``), and with
    ``select_epoch`` the weights of the best epoch by validation ROC AUC (else the last) are
    kept in :attr:`best_state` (epoch :attr:`best_epoch`) for the caller to load.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        lr: float = 5e-4,
        weight_decay: float = 1e-2,
        pos_weight: float = 1.0,
        steps_per_epoch: int = 1,
        epochs: int = 1,
        warmup_steps: int = 0,
        select_epoch: bool = True,
        report: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.pos_weight = float(pos_weight)
        self.steps_per_epoch = int(steps_per_epoch)
        self.total_steps = int(steps_per_epoch) * int(epochs)
        self.warmup_steps = int(warmup_steps)
        self.select_epoch = bool(select_epoch)
        self.report = report
        self.history: list[dict[str, Any]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = -1
        self._best_score = -1.0
        self._losses: list[float] = []
        self._val: list[tuple[np.ndarray, np.ndarray]] = []
        self._t0 = self._train_s = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["atypical"]

    def lr_factor(self, k: int) -> float:
        """The learning rate of optimiser step ``k`` as a share of ``lr``."""
        warm, total = self.warmup_steps, self.total_steps
        if k < warm:
            return (k + 1) / (warm + 1)
        return 0.5 * (1 + math.cos(math.pi * (k - warm) / max(1, total - warm)))

    def on_train_epoch_start(self) -> None:
        self._t0 = time.perf_counter()
        self._losses = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = batch["image"].contiguous(memory_format=torch.channels_last)
        loss = F.binary_cross_entropy_with_logits(
            self(x).float(),
            batch["atypical"],
            weight=batch["weight"],
            pos_weight=torch.tensor(self.pos_weight, device=x.device),
        )
        self._losses.append(float(loss.detach()))
        self.log("loss", loss.detach(), prog_bar=True, batch_size=len(x))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._train_s = time.perf_counter() - self._t0
        self._val = []

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        patches, label = batch
        x = patches.permute(0, 3, 1, 2).float().div_(255.0)
        p = torch.sigmoid(self(x.contiguous(memory_format=torch.channels_last)).float())
        self._val.append((p.cpu().numpy().astype(np.float64), label.cpu().numpy()))

    def on_validation_epoch_end(self) -> None:
        from .metrics import roc_auc

        if self.trainer.sanity_checking:
            return
        p = np.concatenate([v[0] for v in self._val])
        auc = roc_auc(np.concatenate([v[1] for v in self._val]) == 1, p)
        steps = self.steps_per_epoch
        rec = {
            "epoch": self.current_epoch + 1,
            "steps": steps,
            "train_seconds": round(self._train_s, 1),
            "seconds_per_step": round(self._train_s / steps, 3),
            "train_loss": round(float(np.mean(self._losses)), 4),
            "val_roc_auc": round(float(auc), 4) if math.isfinite(auc) else None,
            "val_seconds": round(time.perf_counter() - self._t0 - self._train_s, 1),
        }
        self.history.append(rec)
        if self.report is not None:
            self.report(rec)
        score = auc if math.isfinite(auc) else -0.5
        if not self.select_epoch or score > self._best_score:
            self._best_score, self.best_epoch = score, rec["epoch"]
            self.best_state = {
                k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()
            }

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def make_trainer(
    device: torch.device, *, epochs: int = 1, progress: bool = True, fast_dev_run: bool = False
) -> L.Trainer:
    """The Trainer every mitoscope model trains in: one device (CUDA with mixed precision when
    ``device`` is CUDA, else the CPU in float32), no logger or Lightning checkpoints (the
    trainers write their own checkpoint formats)."""
    cuda = device.type == "cuda"
    return L.Trainer(
        max_epochs=int(epochs),
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        precision="16-mixed" if cuda else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        fast_dev_run=fast_dev_run,
    )
