"""User-facing errors.

Every mistake a user can make (a missing file, a wrong format, a bad config, a checkpoint of
another architecture, a tensor of the wrong shape passed to a public function) raises a subclass
of :class:`ReconError` whose message names the input and what was expected. The CLI prints such
errors as one line and exits non-zero, without a traceback.
"""

from __future__ import annotations


class ReconError(Exception):
    """Base class of the errors a user can cause and fix."""


class InputError(ReconError, ValueError):
    """An input (file, argument, config value) is missing or not what was expected."""


class ShapeError(ReconError, ValueError):
    """A tensor has the wrong shape, dtype or values; the message prints expected and actual."""


class ConfigError(ReconError, ValueError):
    """A config file or key is unknown or invalid."""


class CheckpointError(ReconError, ValueError):
    """A checkpoint cannot be loaded into this model (missing, other architecture, corrupt)."""


def check_shape(x, expected: str, name: str) -> dict[str, int]:
    """Check a tensor/array shape against a symbolic pattern and return the bound dimensions.

    Args:
        x: a tensor or array (anything with ``.shape``).
        expected: space-separated dims, e.g. ``"* H W 3"``: ``*`` matches any number of leading
            dims, an integer must match exactly, a name binds (and must agree where repeated).
        name: the argument's name, used in the message.

    Returns:
        dict of bound names to sizes.

    Raises:
        ShapeError: with the expected pattern and the actual shape.

    Example:
        >>> import torch
        >>> check_shape(torch.zeros(2, 4, 4), "* 4 4", "pose")
        {}
    """
    dims = expected.split()
    shape = tuple(x.shape)
    star = dims[0] == "*"
    fixed = dims[1:] if star else dims
    if (star and len(shape) < len(fixed)) or (not star and len(shape) != len(fixed)):
        raise ShapeError(f"{name}: expected shape [{', '.join(dims)}], got {list(shape)}")
    bound: dict[str, int] = {}
    for d, s in zip(fixed, shape[len(shape) - len(fixed):], strict=True):
        if d.isdigit():
            if int(d) != s:
                raise ShapeError(f"{name}: expected shape [{', '.join(dims)}], got {list(shape)}")
        elif d in bound and bound[d] != s:
            raise ShapeError(
                f"{name}: expected shape [{', '.join(dims)}] with {d}={bound[d]}, got {list(shape)}"
            )
        else:
            bound[d] = s
    return bound
