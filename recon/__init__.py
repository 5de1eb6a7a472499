"""streamrecon: streaming 3D reconstruction from video with a constant-size memory."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("streamrecon")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"
