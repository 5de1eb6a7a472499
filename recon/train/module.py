"""The LightningModule: training logic only; the network is built from its config by ``build_model``.

One shared :meth:`ReconModule.model_step` runs a clip (segment by segment with truncated
backpropagation, see :mod:`recon.train.tbptt`) and computes the losses; training, validation and
test call it. Log keys: ``train/loss`` (+ ``train/<term>``), ``val/loss``, ``val/abs_rel``,
``val/delta1``, ``val/ate`` (and the same under ``test/``).

Optimisation is manual (``automatic_optimization = False``) because one clip may need several
backward passes (one per group of segments) before its single optimizer step; gradient clipping
and the learning-rate schedule (linear warm-up, cosine decay) are applied here.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass

import torch
from lightning.pytorch import LightningModule

from recon.checkpoint import init_from_checkpoint
from recon.errors import ConfigError
from recon.eval import depth_metrics, pose_metrics
from recon.model import ModelConfig, build_model, load_model_config
from recon.train.losses import LossConfig, reconstruction_loss
from recon.train.tbptt import TBPTTConfig, run_segments


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay, stepped once per clip batch.

    Attributes:
        lr: peak learning rate.
        weight_decay: decoupled weight decay (not applied to biases, norms and 1-D parameters).
        betas: Adam betas.
        warmup_steps: linear warm-up from 0 over this many optimizer steps.
        min_lr_ratio: the cosine ends at ``lr * min_lr_ratio``.
        schedule: ``cosine`` or ``constant`` (after warm-up).
        grad_clip: clip the global gradient norm to this (0 = off).
    """

    lr: float = 3e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    schedule: str = "cosine"
    grad_clip: float = 1.0


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based) of ``total_steps``."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant" or total_steps <= cfg.warmup_steps:
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class ReconModule(LightningModule):
    """Trains a :class:`recon.model.StreamReconModel` on clip batches.

    Batches (from :class:`recon.train.datamodule.ClipDataModule`): ``video`` [B, T, 3, H, W] in
    [0, 1], ``depth`` [B, T, H, W] metres (0 invalid), ``K`` [B, T, 3, 3] pixels, ``cam2world``
    [B, T, 4, 4] (OpenCV camera, dataset world), ``dataset`` list[str]; see :mod:`recon.train.losses`.

    Args:
        net: the network's architecture (``model.net.memory.type`` picks the memory layer).
        loss: loss weights.
        optim: optimizer and schedule.
        tbptt: segmenting of long clips for truncated backpropagation.
        intrinsics_given: feed the ground-truth ``K`` to the network (else it predicts intrinsics).
        val_depth_align: alignment of predicted depth for val/test metrics (``median`` per frame,
            ``median_sequence``, ``scale_shift``; see :func:`recon.eval.depth_metrics`).
        train_dense_every: training only: the dense head and its losses run on every k-th frame of
            a clip (1 = all; 2 saves about a tenth of the step on the tiny model); validation and
            test always use every frame.
        init_from: start the network from this checkpoint's weights (an exported folder or a
            ``.ckpt``; fine-tuning): the tensors it has must fit, parts of ``net`` it lacks keep
            their initialisation and are printed. A resumed run (``--ckpt_path``) loads its own.
    """

    def __init__(
        self,
        net: ModelConfig = ModelConfig(),
        loss: LossConfig = LossConfig(),
        optim: OptimConfig = OptimConfig(),
        tbptt: TBPTTConfig = TBPTTConfig(),
        intrinsics_given: bool = False,
        val_depth_align: str = "median",
        train_dense_every: int = 1,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        if train_dense_every < 1:
            raise ConfigError(f"model.train_dense_every: expected an integer >= 1, got {train_dense_every}")
        if optim.schedule not in ("cosine", "constant"):
            raise ConfigError(
                f"model.optim.schedule: expected 'cosine' or 'constant', got {optim.schedule!r}"
            )
        if val_depth_align not in ("median", "median_sequence", "scale_shift"):
            raise ConfigError(
                "model.val_depth_align: expected 'median', 'median_sequence' or 'scale_shift', "
                f"got {val_depth_align!r}"
            )
        cfg = load_model_config(net)
        self.net = build_model(cfg)
        if init_from is not None:
            kept = init_from_checkpoint(self.net, init_from)
            print(f"[recon train] weights from {init_from}; kept at initialisation: "
                  f"{', '.join(kept) if kept else 'none'}", file=sys.stderr)
        self.loss_cfg, self.optim_cfg, self.tbptt_cfg = loss, optim, tbptt.validate()
        self.intrinsics_given, self.val_depth_align = intrinsics_given, val_depth_align
        self.train_dense_every = train_dense_every
        self.automatic_optimization = False
        # Plain mappings only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                "net": cfg.to_dict(),
                "loss": dataclasses.asdict(loss),
                "optim": dataclasses.asdict(optim),
                "tbptt": dataclasses.asdict(tbptt),
                "intrinsics_given": intrinsics_given,
                "val_depth_align": val_depth_align,
                "train_dense_every": train_dense_every,
                "init_from": init_from,
            }
        )

    def forward(self, video: torch.Tensor, K: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.net(video, K)

    def model_step(self, batch: dict, backward=None, keep_outputs: bool = False):
        """Run one clip batch; returns (mean loss terms, outputs or None). See :func:`run_segments`."""
        return run_segments(
            self.net,
            batch,
            self.tbptt_cfg,
            lambda out, seg, first: reconstruction_loss(out, seg, self.loss_cfg, first),
            backward=backward,
            intrinsics=self.intrinsics_given,
            keep_outputs=keep_outputs,
            dense_every=1 if keep_outputs else self.train_dense_every,
        )

    def on_train_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if hasattr(datamodule, "set_epoch"):
            datamodule.set_epoch(self.current_epoch)

    def training_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        terms, _ = self.model_step(batch, backward=self.manual_backward)
        finite = bool(torch.isfinite(terms["loss"]))
        if finite:
            if self.optim_cfg.grad_clip > 0:
                self._clip_gradients(opt)
            opt.step()
            self.lr_schedulers().step()
        else:
            opt.zero_grad(set_to_none=True)  # no step on a non-finite loss: the weights stay good
        batch_size = batch["video"].shape[0]
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=batch_size)
        self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "loss"}, batch_size=batch_size)
        self.log("train/lr", opt.param_groups[0]["lr"], batch_size=batch_size)
        return {"loss": terms["loss"], "finite": finite}

    def _clip_gradients(self, opt) -> None:
        """Clip the global gradient norm; FSDP needs its root module's own (sharded) norm."""
        wrapped = self.trainer.model
        if wrapped is not self and hasattr(wrapped, "clip_grad_norm_"):
            wrapped.clip_grad_norm_(self.optim_cfg.grad_clip)
        else:
            self.clip_gradients(
                opt, gradient_clip_val=self.optim_cfg.grad_clip, gradient_clip_algorithm="norm"
            )

    def _evaluate(self, batch: dict, prefix: str) -> dict:
        terms, out = self.model_step(batch, keep_outputs=True)
        B = batch["video"].shape[0]
        abs_rel, delta1, ate = [], [], []
        for b in range(B):
            gt = batch["depth"][b]
            if (gt > 0).any():
                m = depth_metrics(out["depth"][b], gt, align=self.val_depth_align)
                abs_rel.append(m.abs_rel)
                delta1.append(m.delta1)
            if batch["cam2world"].shape[1] >= 3:
                ate.append(
                    pose_metrics(
                        out["cam2world"][b].double(), batch["cam2world"][b].double(), align="sim3"
                    ).ate_rmse
                )
        values = {f"{prefix}/loss": terms["loss"]}
        for name, items in (("abs_rel", abs_rel), ("delta1", delta1), ("ate", ate)):
            if items:
                values[f"{prefix}/{name}"] = torch.tensor(sum(items) / len(items), device=self.device)
        self.log_dict(values, prog_bar=True, batch_size=B, sync_dist=True)
        return {"outputs": out, **values}

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        return self._evaluate(batch, "test")

    def configure_optimizers(self):
        decay, no_decay = [], []
        for _, p in self.net.named_parameters():
            if p.requires_grad:
                (decay if p.dim() >= 2 else no_decay).append(p)
        cfg = self.optim_cfg
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
        total = (
            self.trainer.max_steps
            if self.trainer.max_steps and self.trainer.max_steps > 0
            else int(self.trainer.estimated_stepping_batches)
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total, cfg))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
