"""``recon train`` = LightningCLI over :class:`ReconModule` and :class:`ClipDataModule` with YAML recipes.

Always-present, configurable callbacks (so a recipe cannot forget them):

- ``checkpoint``: :class:`lightning.pytorch.callbacks.ModelCheckpoint` (``last.ckpt`` kept for resume);
- ``nan_guard``: :class:`recon.train.callbacks.NonFiniteLossGuard`;
- ``prediction_images``: :class:`recon.train.callbacks.DepthPredictionLogger`.

Loggers: CSV always, TensorBoard too when ``tensorboard`` is installed, both under
``trainer.default_root_dir`` (unless the recipe sets ``trainer.logger`` itself).
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from recon.errors import ConfigError
from recon.train.callbacks import DepthPredictionLogger, NonFiniteLossGuard
from recon.train.datamodule import ClipDataModule
from recon.train.module import ReconModule

SUBCOMMANDS = ("fit", "validate", "test")

# With manual optimisation a checkpoint holds the state after the optimizer step, with the matching
# global step and optimizer state: exactly what resuming needs, so Lightning's advice is not for us.
_MANUAL_CHECKPOINT_WARNING = "Using ModelCheckpoint with manual optimization"


def tensorboard_available() -> bool:
    """True when TensorBoard's writer can be imported (``pip install streamrecon[tensorboard]``)."""
    return any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))


def default_loggers(root: str | Path) -> list:
    """CSV logger, plus TensorBoard when installed, both writing under ``root``."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers = [CSVLogger(save_dir=str(root), name="logs")]
    if tensorboard_available():
        loggers.append(TensorBoardLogger(save_dir=str(root), name="tensorboard"))
    return loggers


class ReconCLI(LightningCLI):
    """LightningCLI with the project's callbacks and default loggers."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.every_n_train_steps": 200,
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "step{step:07d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.link_arguments("model.net.image_size", "data.image_size")
        parser.add_lightning_class_args(NonFiniteLossGuard, "nan_guard")
        parser.add_lightning_class_args(DepthPredictionLogger, "prediction_images")

    def before_instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand), self.config)
        if config.get("weights_only") is None:
            config["weights_only"] = True  # resuming / evaluating a .ckpt never unpickles code

    def instantiate_trainer(self, **kwargs):
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        root = trainer_cfg.get("default_root_dir") or "runs"
        if trainer_cfg.get("logger") in (None, True):
            kwargs["logger"] = default_loggers(root)
        checkpoint = self._get(self.config_init, "checkpoint")
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.dirpath is None:
            checkpoint.dirpath = str(Path(root).resolve() / "checkpoints")
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        """Save ``last.ckpt`` at the end of training even when max_steps is not a multiple of the period."""
        checkpoint = self._get(self.config_init, "checkpoint")
        if (
            isinstance(checkpoint, ModelCheckpoint)
            and checkpoint.dirpath
            and not self.trainer.interrupted
        ):
            self.trainer.save_checkpoint(Path(checkpoint.dirpath) / "last.ckpt", weights_only=False)


def run_cli(args: list[str]) -> int:
    """Run ``recon train`` with ``args`` (``fit|validate|test --config recipe.yaml [overrides]``).

    Returns:
        0 on success. Argument errors (unknown config keys, wrong types) print jsonargparse's
        message and exit with status 2.
    """
    if not args or args[0] not in (*SUBCOMMANDS, "-h", "--help"):
        got = repr(args[0]) if args else "nothing"
        raise ConfigError(
            f"expected a subcommand {'|'.join(SUBCOMMANDS)} first, got {got}; "
            "e.g. recon train fit --config configs/train/tiny_synthetic_cpu.yaml"
        )
    # sys.argv stays as it is: Lightning's DDP launcher re-runs it for the other ranks. args is what
    # LightningCLI parses, so its warning about sys.argv also holding arguments does not apply.
    warnings.filterwarnings("ignore", message=_MANUAL_CHECKPOINT_WARNING)
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    try:
        ReconCLI(
            ReconModule,
            ClipDataModule,
            args=args,
            auto_configure_optimizers=False,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={
                "prog": "recon train",
                **{sub: {"default_config_files": []} for sub in SUBCOMMANDS},
            },
        )
    except SystemExit as e:  # jsonargparse already printed the usage error
        return int(e.code or 0) if isinstance(e.code, int) else 2
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(sys.argv[1:]))
