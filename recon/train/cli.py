"""``recon train`` = LightningCLI over :class:`ReconModule` and :class:`ClipDataModule` with YAML recipes.

Always-present, configurable callbacks (so a recipe cannot forget them):

- ``checkpoint``: :class:`lightning.pytorch.callbacks.ModelCheckpoint` (``last.ckpt`` kept for resume);
- ``nan_guard``: :class:`recon.train.callbacks.NonFiniteLossGuard`;
- ``prediction_images``: :class:`recon.train.callbacks.DepthPredictionLogger`.

- ``last.ckpt`` at the step that reaches ``max_steps`` (:class:`recon.train.callbacks.FinalStepCheckpoint`),
  so resuming from it continues the epoch a step checkpoint of that step would.

Loggers: CSV always, TensorBoard too when ``tensorboard`` is installed, both under
``trainer.default_root_dir`` (unless the recipe sets ``trainer.logger`` itself).

Checked before anything is built (one-line errors, exit 2): ``model.optim`` values (finite, in
range) and ``--ckpt_path`` (``last`` needs a last checkpoint in the run's checkpoint folder; a path
must be a ``recon train`` checkpoint readable with ``weights_only=True``).
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
import warnings
from pathlib import Path

from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from recon.checkpoint import read_lightning_checkpoint
from recon.errors import ConfigError
from recon.train.callbacks import DepthPredictionLogger, FinalStepCheckpoint, NonFiniteLossGuard
from recon.train.datamodule import ClipDataModule
from recon.train.module import ReconModule

SUBCOMMANDS = ("fit", "validate", "test")

# With manual optimisation a checkpoint holds the state after the optimizer step, with the matching
# global step and optimizer state: exactly what resuming needs, so Lightning's advice is not for us.
_MANUAL_CHECKPOINT_WARNING = "Using ModelCheckpoint with manual optimization"


# ModelCheckpoint's names for "last" checkpoints (last.ckpt, last-v1.ckpt, ...), as Lightning finds them.
_LAST = re.compile(r"^last(-(\d+)|-v\d+)?\.ckpt$")
# Lightning's own ckpt_path keywords other than "last" (resolved by Lightning).
_LIGHTNING_CKPT_KEYWORDS = ("best", "hpc")


def checkpoint_dir(dirpath: str | None, default_root_dir: str | None) -> Path:
    """Where a run's checkpoints go: ``checkpoint.dirpath``, else ``<default_root_dir>/checkpoints``."""
    return Path(dirpath) if dirpath else Path(default_root_dir or "runs").resolve() / "checkpoints"


def _get(config, key: str, default=None):
    try:
        value = config.get(key, default) if hasattr(config, "get") else default
    except (KeyError, TypeError):
        return default
    return default if value is None else value


def check_optim(optim) -> None:
    """``model.optim`` values: finite and in range (AdamW would raise a traceback at step 0 otherwise).

    Raises:
        ConfigError: naming the key, the expected range and the value.
    """
    if optim is None:
        return

    def need(key: str, ok, expected: str) -> None:
        value = _get(optim, key)
        if value is None:
            return
        try:
            good = bool(ok(value))
        except (TypeError, ValueError):
            good = False
        if not good:
            raise ConfigError(f"model.optim.{key}: expected {expected}, got {value!r}")

    def finite(v) -> bool:
        return math.isfinite(float(v))

    need("lr", lambda v: finite(v) and float(v) > 0, "a finite number > 0")
    need("weight_decay", lambda v: finite(v) and float(v) >= 0, "a finite number >= 0")
    need("betas", lambda v: len(v) == 2 and all(finite(b) and 0 <= float(b) < 1 for b in v),
         "two numbers in [0, 1)")
    need("warmup_steps", lambda v: int(v) == v and v >= 0, "an integer >= 0")
    need("min_lr_ratio", lambda v: finite(v) and 0 <= float(v) <= 1, "a number in [0, 1]")
    need("schedule", lambda v: v in ("cosine", "constant"), "'cosine' or 'constant'")
    need("grad_clip", lambda v: finite(v) and float(v) >= 0, "a finite number >= 0 (0 = off)")


def check_ckpt_path(ckpt_path, folder: Path) -> None:
    """``--ckpt_path``: ``last`` needs a last checkpoint in ``folder``; a path must be a readable
    weights-only ``recon train`` checkpoint (Lightning would otherwise start from scratch after one
    warning line, or fail with a traceback).

    Raises:
        ConfigError / CheckpointError naming the folder or file.
    """
    if ckpt_path is None or ckpt_path in _LIGHTNING_CKPT_KEYWORDS or "://" in str(ckpt_path):
        return
    if ckpt_path == "last":
        found = sorted(p for p in folder.iterdir() if _LAST.match(p.name)) if folder.is_dir() else []
        if not found:
            raise ConfigError(
                f"--ckpt_path last: no last checkpoint (last.ckpt) in {folder}; it is where this recipe's "
                "trainer.default_root_dir (or checkpoint.dirpath) keeps checkpoints. Drop --ckpt_path to "
                "train from scratch, or pass a .ckpt file"
            )
        path = max(found, key=lambda p: p.stat().st_mtime)
    else:
        path = Path(ckpt_path)
        if not path.is_file():
            raise ConfigError(
                f"--ckpt_path {ckpt_path}: no such file (expected a .ckpt written by recon train, or 'last')"
            )
    read_lightning_checkpoint(path, mmap=True)


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

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse, then check ``model.optim`` and ``--ckpt_path`` before LightningCLI reads the
        checkpoint's hyperparameters (or sets the seed)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config.get(str(subcommand), self.config) if subcommand else self.config
        check_optim(_get(config, "model.optim"))
        folder = checkpoint_dir(_get(config, "checkpoint.dirpath"), _get(config, "trainer.default_root_dir"))
        check_ckpt_path(_get(config, "ckpt_path"), folder)

    def before_instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand), self.config)
        if config.get("weights_only") is None:
            config["weights_only"] = True  # resuming / evaluating a .ckpt never unpickles code
        check_optim(_get(config, "model.optim"))  # after a checkpoint's hyperparameters were merged in

    def instantiate_trainer(self, **kwargs):
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        root = trainer_cfg.get("default_root_dir") or "runs"
        if trainer_cfg.get("logger") in (None, True):
            kwargs["logger"] = default_loggers(root)
        checkpoint = self._get(self.config_init, "checkpoint")
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.dirpath is None:
            checkpoint.dirpath = str(checkpoint_dir(None, root))
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        """Save ``last.ckpt`` at the end of training when no checkpoint holds the final step yet.

        A run that reaches ``max_steps`` already saved it inside the loop (:class:`FinalStepCheckpoint`:
        the same loop state as a step checkpoint); this covers the other ends (``max_epochs``).
        """
        checkpoint = self._get(self.config_init, "checkpoint")
        final = next((c for c in self.trainer.callbacks if isinstance(c, FinalStepCheckpoint)), None)
        if final is not None and final.saved_step == self.trainer.global_step:
            return
        if (
            isinstance(checkpoint, ModelCheckpoint)
            and checkpoint.dirpath
            and not self.trainer.interrupted
        ):
            self.trainer.save_checkpoint(Path(checkpoint.dirpath) / "last.ckpt", weights_only=False)


def run_cli(args: list[str]) -> int:
    """Run ``recon train`` with ``args`` (``fit|validate|test --config recipe.yaml [overrides]``).

    Returns:
        0 on success.

    Raises:
        ConfigError: argument errors (unknown config keys, wrong types: jsonargparse's message),
            out-of-range ``model.optim`` values, a ``--ckpt_path`` that is missing or not a
            readable checkpoint; ``recon`` prints it as one line and exits 2.
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
            trainer_defaults={"callbacks": [FinalStepCheckpoint()]},
            save_config_kwargs={"overwrite": True},
            parser_kwargs={
                "prog": "recon train",
                "exit_on_error": False,
                **{sub: {"default_config_files": [], "exit_on_error": False} for sub in SUBCOMMANDS},
            },
        )
    except ArgumentError as e:  # an unknown key, a value of the wrong type: one line, exit 2
        raise ConfigError(f"{e} (see recon train {args[0]} --help)") from None
    except SystemExit as e:  # --help, or an error jsonargparse printed itself
        return int(e.code or 0) if isinstance(e.code, int) else 2
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(sys.argv[1:]))
