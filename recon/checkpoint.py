"""Model weights on disk: safetensors + a YAML config beside them; Lightning ``.ckpt`` for resuming.

An exported checkpoint is a folder::

    OUT_DIR/model.safetensors   the network's state dict (float32 tensors, no pickle)
    OUT_DIR/config.yaml         format, model (the ModelConfig as a mapping), signature, meta

:func:`load_model` accepts that folder, the ``.safetensors`` file inside it, or a Lightning ``.ckpt``
written by ``recon train`` (read with ``torch.load(weights_only=True)``: never unpickles code). A
checkpoint whose tensors do not fit the model (another architecture) raises
:class:`recon.errors.CheckpointError` listing the missing, unexpected and shape-mismatched keys.
That check comes before anything is allocated: the model the config describes is built on the
``meta`` device (no memory) and its shapes compared with the weight file's (for safetensors, read
from the header alone), so a config asking for absurd sizes is refused, not allocated.
Configs are parsed as YAML data, never evaluated.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from recon.errors import CheckpointError, ConfigError
from recon.files import atomic_write

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.yaml"
FORMAT = "streamrecon-weights/1"
# The network's attribute name inside the training LightningModule (state-dict prefix in .ckpt files).
LIGHTNING_PREFIX = "net."
# The checkpoint shipped with the package (trained on the synthetic dataset; see docs/training.md).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "checkpoints" / "tiny"

_LIST_LIMIT = 8


def save_weights(model: nn.Module, out_dir: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Export a :class:`recon.model.StreamReconModel` as ``model.safetensors`` + ``config.yaml``.

    Args:
        model: the network (its ``cfg`` is written to the config).
        out_dir: folder to write (created; existing files of these two names are replaced atomically).
        meta: JSON/YAML-serialisable facts to record (training recipe, step, data, metrics).

    Returns:
        the folder.
    """
    out_dir = Path(out_dir)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    config = {"format": FORMAT, "model": model.cfg.to_dict(), "signature": model.cfg.signature(),
              "num_parameters": int(sum(p.numel() for p in model.parameters())), "meta": meta or {}}
    metadata = {"format": FORMAT, "signature": config["signature"]}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    text = yaml.safe_dump(config, sort_keys=False)
    atomic_write(out_dir / CONFIG_NAME, lambda tmp: tmp.write_text(text))
    return out_dir


def read_config(path: str | Path) -> dict[str, Any]:
    """The parsed ``config.yaml`` of an exported checkpoint (CheckpointError when missing or invalid)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: missing (an exported checkpoint needs {CONFIG_NAME} beside {WEIGHTS_NAME})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from e
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{path}: expected a mapping with a 'model' section (written by recon export)")
    return data


def read_lightning_checkpoint(
    path: str | Path, mmap: bool = False
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict]:
    """Network config, network state dict and training facts from a ``recon train`` ``.ckpt``.

    Loaded with ``torch.load(weights_only=True)``; ``mmap`` maps the tensors instead of reading them
    (a cheap check of a large checkpoint).

    Returns:
        (model config mapping, state dict with the ``net.`` prefix removed, {"global_step", "epoch"}).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file (expected a Lightning .ckpt)")
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as e:
            if not (mmap and "mmap can only be used" in str(e)):
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # not a zip: say what it is
    except Exception as e:  # unpickling errors of many kinds: corrupt file or foreign objects
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only Lightning checkpoint ({_load_error(e)}); "
            "expected a .ckpt written by recon train (nothing in it was executed)") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    hparams = ckpt.get("hyper_parameters") or {}
    net_cfg = hparams.get("net")
    if not isinstance(net_cfg, dict):
        raise CheckpointError(
            f"{path}: no network config in hyper_parameters['net'] (not written by recon train)")
    n = len(LIGHTNING_PREFIX)
    state = {k[n:]: v for k, v in ckpt["state_dict"].items() if k.startswith(LIGHTNING_PREFIX)}
    if not state:
        raise CheckpointError(f"{path}: no '{LIGHTNING_PREFIX}*' weights in its state_dict")
    return net_cfg, state, {"global_step": ckpt.get("global_step"), "epoch": ckpt.get("epoch")}


def _load_error(e: Exception) -> str:
    """The telling line of a torch.load error (its weights-only refusals span a page)."""
    text = str(e)
    marker = "WeightsUnpickler error:"
    if marker in text:  # the refusal itself, without torch's advice to load it unsafely
        reason = text.split(marker, 1)[1].split("Check the documentation", 1)[0]
        return "refused by the weights-only unpickler: " + (" ".join(reason.split()) or "unsupported content")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines or [type(e).__name__])[0]


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_LIST_LIMIT])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _LIST_LIMIT else "")


def _mismatch(own: dict[str, list[int]], theirs: dict[str, list[int]], source: str, what: str) -> str | None:
    """The CheckpointError message for shapes that differ, or None when they agree."""
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    mismatched = sorted(f"{k} (checkpoint {theirs[k]}, {what} {own[k]})"
                        for k in set(own) & set(theirs) if list(own[k]) != list(theirs[k]))
    if not (missing or unexpected or mismatched):
        return None
    parts = [f"{source}: checkpoint does not fit this {what} (another architecture?)"]
    if missing:
        parts.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_listing(unexpected)}")
    if mismatched:
        parts.append(f"shape mismatches: {_listing(mismatched)}")
    return "; ".join(parts)


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` strictly; CheckpointError listing every kind of mismatch.

    Args:
        model: the network to fill.
        state: tensors by parameter / buffer name.
        source: where they came from (for the message).
    """
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    message = _mismatch(own, {k: list(v.shape) for k, v in state.items()}, source, "model")
    if message:
        raise CheckpointError(message)
    model.load_state_dict(state, strict=True)


def safetensors_shapes(path: str | Path) -> dict[str, list[int]]:
    """Tensor shapes of a safetensors file, from its header alone (no tensor is read).

    Raises:
        CheckpointError: not a readable safetensors file.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_load_error(e)})") from e


class _TooLarge(Exception):
    """Raised inside a meta-device build that outgrew the weights it is checked against."""


def check_config_shapes(cfg: Any, shapes: dict[str, list[int]], source: str) -> None:
    """The model ``cfg`` describes must have exactly the tensors ``shapes`` lists, checked before
    anything is allocated: the model is built on the ``meta`` device (shapes, no memory).

    Args:
        cfg: a model config (mapping, preset name, path or ModelConfig).
        shapes: tensor shapes by state-dict name (the weight file's).
        source: where they came from (for the message).

    Raises:
        CheckpointError: an invalid config, or one whose tensors differ from the weights' (e.g. a
            config.yaml edited to ``dim: 60000`` beside weights of dim 64).
    """
    from torch.nn.modules.module import register_module_parameter_registration_hook

    from recon.model import build_model

    # Even on the meta device, building a config that asks for e.g. 60,000 blocks takes minutes:
    # stop as soon as it has registered clearly more parameters than the weights hold.
    budget = 2 * sum(math.prod(s) for s in shapes.values()) + 1_000_000
    registered = [0]

    def count(module, name, param) -> None:
        registered[0] += 0 if param is None else param.numel()
        if registered[0] > budget:
            raise _TooLarge

    hook = register_module_parameter_registration_hook(count)
    try:
        with torch.device("meta"):
            skeleton = build_model(cfg)
    except ConfigError as e:
        raise CheckpointError(f"{source}: its model config is invalid ({e})") from e
    except (TypeError, ValueError, OverflowError, RuntimeError) as e:
        # a value the config validation let through (e.g. mlp_ratio: '' or 1e17) that no model has
        reason = (str(e).splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{source}: its model config cannot be built ({type(e).__name__}: {reason}); nothing was built"
        ) from e
    except _TooLarge:
        raise CheckpointError(
            f"{source}: checkpoint does not fit this model config (another architecture?): the config "
            f"describes more than {budget:,} parameters, the weights hold "
            f"{sum(math.prod(s) for s in shapes.values()):,}; nothing was built") from None
    finally:
        hook.remove()
    own = {k: list(v.shape) for k, v in skeleton.state_dict().items()}
    message = _mismatch(own, shapes, source, "model config")
    if message:
        raise CheckpointError(message + "; nothing was built")


def check_architecture(cfg: dict[str, Any], source: str, override: Any = None) -> None:
    """Refuse a checkpoint config of another design version, or an override that changes the window.

    Args:
        cfg: the checkpoint's model config mapping (configs written before versions were recorded
            are version 1).
        source: where it came from (for the message).
        override: the architecture the caller asked to build instead (``load_model(model_config=)``).

    Raises:
        CheckpointError: naming both versions (or both window / pose-slot counts).
    """
    from recon.model.config import ARCHITECTURE_VERSION, ARCHITECTURES, load_model_config

    version = cfg.get("architecture", 1)
    if version != ARCHITECTURE_VERSION:
        raise CheckpointError(
            f"{source}: checkpoint of model architecture {version} "
            f"({ARCHITECTURES.get(version, 'unknown')}); this streamrecon builds architecture "
            f"{ARCHITECTURE_VERSION} ({ARCHITECTURES[ARCHITECTURE_VERSION]}); retrain it with `recon train` "
            f"(docs/training.md); it is not loaded half-way")
    if override is None:
        return
    try:
        own, other = load_model_config(cfg), load_model_config(override)
    except ConfigError as e:
        raise CheckpointError(f"{source}: {e}") from e
    for name, a, b in (("window", own.window, other.window),
                       ("head.pose_slots", own.head.pose_slots, other.head.pose_slots),
                       ("head.long_pose_offsets", own.head.long_pose_offsets, other.head.long_pose_offsets)):
        if a != b:
            raise CheckpointError(
                f"{source}: the checkpoint was trained with {name} {a}, the requested model config has {b}; "
                f"the pose tokens and local windows of one cannot run the other")


def _locate(source: str | Path) -> tuple[str, Path]:
    """('export', folder) or ('lightning', file) for a checkpoint path."""
    path = Path(source)
    if path.is_dir():
        if (path / WEIGHTS_NAME).is_file():
            return "export", path
        raise CheckpointError(
            f"{path}: folder has no {WEIGHTS_NAME} (expected a folder written by recon export)")
    if path.suffix == ".safetensors" and path.is_file():
        return "export", path.parent
    if path.suffix == ".ckpt" and path.is_file():
        return "lightning", path
    expected = f"expected an exported folder, {WEIGHTS_NAME} or a Lightning .ckpt"
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint ({expected})")
    raise CheckpointError(f"{path}: unknown checkpoint type ({expected})")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; CheckpointError when it cannot be read."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def load_model(source: str | Path = DEFAULT_CHECKPOINT, device: str | torch.device = "cpu",
               model_config: Any = None) -> nn.Module:
    """Build the network a checkpoint describes and load its weights (in eval mode).

    Args:
        source: an exported folder (``model.safetensors`` + ``config.yaml``), the ``.safetensors``
            file in it, or a Lightning ``.ckpt`` from ``recon train``. Default: the shipped tiny model.
        device: where to put the model.
        model_config: optional architecture to build instead of the checkpoint's own config (a
            preset name, YAML path, dict or ModelConfig); the weights must fit it.

    Returns:
        :class:`recon.model.StreamReconModel` in eval mode.

    Raises:
        CheckpointError: missing / unreadable files, a checkpoint of another architecture version,
            a ``model_config`` with another window or pose-slot count, or weights of another shape.
    """
    from recon.model import build_model

    kind, path = _locate(source)
    wanted = None
    if kind == "export":
        cfg = read_config(path / CONFIG_NAME)["model"]
        check_architecture(cfg, str(path), model_config)
        wanted = model_config if model_config is not None else cfg
        check_config_shapes(wanted, safetensors_shapes(path / WEIGHTS_NAME), str(path))
        state = _read_weights(path / WEIGHTS_NAME)
    else:
        cfg, state, _ = read_lightning_checkpoint(path)
        check_architecture(cfg, str(path), model_config)
        wanted = model_config if model_config is not None else cfg
        check_config_shapes(wanted, {k: list(v.shape) for k, v in state.items()}, str(path))
    try:
        model = build_model(wanted)
    except ConfigError as e:
        raise CheckpointError(f"{path}: its model config is invalid ({e})") from e
    load_state_checked(model, state, str(path))
    return model.to(device).eval()


def export_checkpoint(source: str | Path, out_dir: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Convert a ``.ckpt`` (or re-write an exported folder) into ``out_dir`` as safetensors + config.

    Returns:
        ``out_dir``.
    """
    kind, path = _locate(source)
    facts: dict[str, Any] = {"source": str(path)}
    if kind == "lightning":
        _, _, training = read_lightning_checkpoint(path)
        facts.update({k: v for k, v in training.items() if v is not None})
    else:
        facts.update(read_config(path / CONFIG_NAME).get("meta") or {})
    model = load_model(path)
    return save_weights(model, out_dir, {**facts, **(meta or {})})


def init_from_checkpoint(model: nn.Module, source: str | Path) -> list[str]:
    """Start ``model`` from a checkpoint's weights (fine-tuning): every tensor of the checkpoint
    must exist in ``model`` with its shape; tensors of ``model`` the checkpoint lacks (a part added
    since, e.g. a memory block) keep their initialisation.

    Args:
        model: the freshly built network.
        source: an exported folder / ``.safetensors`` / Lightning ``.ckpt`` of the same
            architecture version.

    Returns:
        The names of the tensors that kept their initialisation (sorted).

    Raises:
        CheckpointError: unreadable, another architecture version, or tensors the model does not
            have or has with another shape (all listed).
    """
    kind, path = _locate(source)
    if kind == "export":
        check_architecture(read_config(path / CONFIG_NAME)["model"], str(path))
        state = _read_weights(path / WEIGHTS_NAME)
    else:
        cfg, state, _ = read_lightning_checkpoint(path)
        check_architecture(cfg, str(path))
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: list(v.shape) for k, v in state.items()}
    kept = sorted(set(own) - set(theirs))
    message = _mismatch({k: own[k] for k in own if k in theirs}, theirs, str(path),
                        "model (fine-tuning start)")
    if message:
        raise CheckpointError(message)
    model.load_state_dict(state, strict=False)
    return kept
