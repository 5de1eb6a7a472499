"""Training callbacks: a non-finite-loss guard, the final-step checkpoint and example depth
predictions logged at validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

from recon.errors import ReconError


class TrainingDivergedError(ReconError, RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


class NonFiniteLossGuard(Callback):
    """Stop training with a clear message when the loss stops being finite.

    The module skips the optimizer step of a batch whose loss is not finite, so the weights stay the
    last good ones; this guard then raises :class:`TrainingDivergedError`. Lightning saves no
    checkpoint on an exception, so ``last.ckpt`` stays the last good state to resume from (with a
    lower learning rate, say).

    Args:
        patience: consecutive non-finite batches tolerated before stopping (1 = stop at the first).
    """

    def __init__(self, patience: int = 1) -> None:
        self.patience = patience
        self.bad = 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if not isinstance(outputs, dict) or "loss" not in outputs:
            return
        loss = outputs["loss"]
        finite = bool(torch.isfinite(torch.as_tensor(loss)).all())
        # Agree across ranks so every process stops together.
        finite = bool(trainer.strategy.reduce_boolean_decision(finite, all=True))
        self.bad = 0 if finite else self.bad + 1
        if self.bad >= self.patience:
            ckpt_dir = _checkpoint_dir(trainer)
            where = f"; the last good checkpoint is in {ckpt_dir}" if ckpt_dir else ""
            raise TrainingDivergedError(
                f"training loss is {float(loss)} at global step {trainer.global_step} (batch {batch_idx} of "
                f"epoch {trainer.current_epoch}); stopped without applying that step{where}. Lower "
                "model.optim.lr or raise model.optim.warmup_steps and resume with --ckpt_path"
            )


class FinalStepCheckpoint(Callback):
    """Save ``last.ckpt`` at the batch that reaches ``max_steps``, inside the training loop.

    A checkpoint saved there holds the loop state a step checkpoint of the same step holds (the
    epoch still in progress); one saved after ``fit`` returns would hold the epoch as finished, so a
    run resumed from it would count one epoch more than a run resumed from the step checkpoint.
    ``saved_step`` is the global step it saved at (None before).
    """

    def __init__(self) -> None:
        self.saved_step: int | None = None

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        max_steps = trainer.max_steps
        if max_steps is None or max_steps < 0 or trainer.global_step < max_steps:
            return
        cb = trainer.checkpoint_callback
        dirpath = getattr(cb, "dirpath", None)
        if not dirpath or self.saved_step == trainer.global_step:
            return
        name = f"{getattr(cb, 'CHECKPOINT_NAME_LAST', 'last')}{getattr(cb, 'FILE_EXTENSION', '.ckpt')}"
        trainer.save_checkpoint(Path(dirpath) / name, weights_only=False)
        self.saved_step = trainer.global_step


def _checkpoint_dir(trainer: Trainer) -> str | None:
    cb = trainer.checkpoint_callback
    return getattr(cb, "dirpath", None) if cb is not None else None


def depth_to_rgb(
    depth: np.ndarray,
    valid: np.ndarray | None = None,
    lo: float | None = None,
    hi: float | None = None,
    cmap: str = "turbo",
) -> np.ndarray:
    """Colour a depth / confidence map: [H, W] -> [H, W, 3] uint8 (invalid pixels black).

    Args:
        depth: [H, W] values.
        valid: optional [H, W] bool.
        lo, hi: colour range (default: 2nd / 98th percentiles of the valid values).
        cmap: matplotlib colormap name.
    """
    from matplotlib import colormaps

    valid = np.isfinite(depth) if valid is None else valid & np.isfinite(depth)
    values = depth[valid]
    if values.size == 0:
        return np.zeros((*depth.shape, 3), np.uint8)
    lo = float(np.percentile(values, 2)) if lo is None else lo
    hi = float(np.percentile(values, 98)) if hi is None else hi
    norm = np.clip((depth - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    rgb = (colormaps[cmap](norm)[..., :3] * 255).astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def prediction_panel(
    image: torch.Tensor, gt_depth: torch.Tensor, depth: torch.Tensor, conf: torch.Tensor
) -> np.ndarray:
    """One row per frame: RGB | ground-truth depth | predicted depth (median-scaled) | confidence.

    Args:
        image: [T, 3, H, W] in [0, 1]; gt_depth, depth, conf: [T, H, W].

    Returns:
        [T * H, 4 * W, 3] uint8. GT and prediction share one colour range per frame.
    """
    rows = []
    for t in range(image.shape[0]):
        rgb = (image[t].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
        gt, pred = gt_depth[t].cpu().numpy(), depth[t].float().cpu().numpy()
        valid = gt > 0
        if valid.any():
            pred = pred * (np.median(gt[valid]) / max(float(np.median(pred[valid])), 1e-9))
            lo, hi = np.percentile(gt[valid], [2, 98])
        else:
            lo, hi = np.percentile(pred, [2, 98])
        rows.append(
            np.concatenate(
                [
                    rgb,
                    depth_to_rgb(gt, valid, lo, hi),
                    depth_to_rgb(pred, None, lo, hi),
                    depth_to_rgb(np.log(conf[t].float().cpu().numpy()), cmap="viridis"),
                ],
                axis=1,
            )
        )
    return np.concatenate(rows, axis=0)


class DepthPredictionLogger(Callback):
    """Log example depth predictions of the first validation batch as an image.

    Writes ``<log_dir>/predictions/step_<global_step>.png`` and, for a TensorBoard logger, adds the
    image under ``val/predictions``.

    Args:
        max_frames: frames of the first clip to show (rows).
    """

    def __init__(self, max_frames: int = 4) -> None:
        self.max_frames = max_frames

    @rank_zero_only
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs,
        batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not isinstance(outputs, dict):
            return
        if "outputs" not in outputs:
            return
        out, n = outputs["outputs"], self.max_frames
        panel = prediction_panel(
            batch["video"][0, :n], batch["depth"][0, :n], out["depth"][0, :n], out["depth_conf"][0, :n]
        )
        log_dir = trainer.log_dir or trainer.default_root_dir
        path = Path(log_dir) / "predictions" / f"step_{trainer.global_step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        import cv2

        cv2.imwrite(str(path), panel[..., ::-1])
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image("val/predictions", panel, trainer.global_step, dataformats="HWC")
