"""Live / saved Rerun visualisation of a streaming run (rerun-sdk 0.41 API).

Entity tree (OpenCV camera = Rerun RDF):
    world                      ViewCoordinates.RDF (static)
    world/camera               Transform3D (cam2world) + Pinhole (K, resolution): the frustum
    world/camera/image         Image (RGB)
    world/camera/depth         DepthImage (model units), turbo colormap over a fixed range
    world/camera/confidence    DepthImage of the confidence (>= 1), viridis over a fixed range
                               (both shown in their 2D views only: the 3D view leaves them out, the
                               frame's points are world/points)
    world/points               Points3D, this frame's points (subsampled)
    world/map                  Points3D, the accumulated map (every ``map_every`` frames and at the end)
    world/trajectory/NNNN      LineStrips3D, the camera centres so far, in segments of
                               ``TRAJECTORY_SEGMENT`` frames: the current segment is logged every frame
                               (a constant cost per frame), so at any time cursor the 3D view draws
                               the whole path up to that frame
    metrics/{fps,latency_ms,rss_mb}   Scalars
on the sequence timeline ``frame``. The same blueprint (:func:`default_blueprint`) goes to every
sink: the live viewer and the saved .rrd open with one layout.

``serve`` hosts a gRPC server (``GrpcServerSink``, its buffer bounded by ``memory_limit``; when it
is full the oldest data is dropped, static data never) and the web viewer, and prints the page to
open (:func:`viewer_page_url`). The server lives as long as the logger: :meth:`RerunLogger.finish`
(end of the run) flushes and keeps serving, :meth:`RerunLogger.close` stops it.
"""

from __future__ import annotations

import re
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import rerun as rr
import rerun.blueprint as rrb

from recon.errors import InputError
from recon.infer.frames import FramePrediction

CLOSE_FLUSH_S = 10.0

VIEWER_MODES = ("off", "spawn", "serve", "connect")
DEFAULT_GRPC_PORT = 9876
DEFAULT_WEB_PORT = 9090
DEFAULT_MEMORY_LIMIT = "1GiB"
# One trajectory entity per this many frames: each per-frame log is at most this many vertices.
TRAJECTORY_SEGMENT = 256
_MEMORY_LIMIT = re.compile(r"^(?:(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)|(\d+(?:\.\d+)?)\s*%)$")


def check_memory_limit(text: str) -> str:
    """``text`` if it is a size Rerun's server accepts (``512MB``, ``2GiB``, ``25%``); else InputError."""
    m = _MEMORY_LIMIT.match(text.strip())
    ok = m is not None and (float(m.group(1)) > 0 if m.group(1) else 0 < float(m.group(3)) <= 100)
    if not ok:
        raise InputError(f"--rerun-memory-limit {text!r}: expected a size such as 512MB, 2GiB or 25% "
                         "(of the machine's RAM)")
    return text.strip()


def grpc_url(port: int) -> str:
    """The gRPC address a viewer on this machine connects to (the server binds every interface)."""
    return f"rerun+http://127.0.0.1:{port}/proxy"


def viewer_page_url(web_port: int, grpc_port: int) -> str:
    """The web-viewer page to open: the viewer's address plus ``?url=`` the gRPC server (the ``+``
    of ``rerun+http`` percent-encoded, as a query string needs)."""
    return f"http://127.0.0.1:{web_port}/?url={quote(grpc_url(grpc_port), safe=':/')}"


def check_port_free(port: int, flag: str) -> None:
    """InputError naming the port and the flag that changes it unless ``port`` can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError as e:
            raise InputError(f"{flag} {port}: the port is not free ({e.strerror}; another viewer or server "
                             f"may be using it); choose another port with {flag}") from None


def default_blueprint() -> rrb.Blueprint:
    """3D view (map, points, camera frustum, trajectory so far) beside the image / depth /
    confidence views, with the metrics plots below."""
    return rrb.Blueprint(
        rrb.Vertical(
            rrb.Horizontal(
                # depth and confidence only in their 2D views: world/points already draws this frame
                # in 3D, in its own colours
                rrb.Spatial3DView(
                    origin="world", name="3D",
                    contents=["+ world/**", "- world/camera/depth", "- world/camera/confidence"],
                ),
                rrb.Vertical(
                    rrb.Spatial2DView(origin="world/camera", contents="world/camera/image", name="image"),
                    rrb.Spatial2DView(origin="world/camera", contents="world/camera/depth", name="depth"),
                    rrb.Spatial2DView(
                        origin="world/camera", contents="world/camera/confidence", name="confidence"
                    ),
                ),
                column_shares=[3, 1],
            ),
            rrb.Horizontal(
                rrb.TimeSeriesView(origin="metrics/fps", name="frames/s"),
                rrb.TimeSeriesView(origin="metrics/latency_ms", name="latency (ms)"),
                rrb.TimeSeriesView(origin="metrics/rss_mb", name="memory (MB)"),
            ),
            row_shares=[4, 1],
        ),
        collapse_panels=True,
    )


def image_range(values: np.ndarray, low: float | None = None) -> tuple[float, float]:
    """A colormap range for a depth or confidence image: [``low`` (default the 1st percentile),
    the 99th percentile x 1.25] of its finite positive values; (0, 1) when there are none."""
    v = values[np.isfinite(values) & (values > 0)]
    if v.size == 0:
        return 0.0, 1.0
    lo = float(np.percentile(v, 1)) if low is None else float(low)
    hi = max(float(np.percentile(v, 99)) * 1.25, lo + 1e-6)
    return lo, hi


@dataclass
class RerunOptions:
    """Where the recording goes.

    Attributes:
        viewer: "off", "spawn" (start a native viewer), "serve" (host a gRPC server and the web
            viewer), or "connect" (stream to a running viewer at ``url``).
        save: path of an .rrd file to write (also works together with a viewer mode).
        url: gRPC url for "connect" (default ``rerun+http://127.0.0.1:9876/proxy``).
        web_port: port of the web viewer for "serve" (default 9090).
        grpc_port: port of the gRPC server for "serve" (default 9876).
        memory_limit: bound on what the "serve" gRPC server buffers for viewers that connect late
            (``512MB``, ``2GiB``, ``25%`` of RAM); past it the oldest data is dropped.
        points_per_frame: how many of a frame's points to log.
        map_every: log the accumulated map every this many frames.
        map_points: at most this many map points per log (keeps a 10,000 frame recording in the
            hundreds of MB, not tens of GB).
    """

    viewer: str = "off"
    save: str | None = None
    url: str | None = None
    web_port: int | None = None
    grpc_port: int | None = None
    memory_limit: str = DEFAULT_MEMORY_LIMIT
    points_per_frame: int = 5000
    map_every: int = 25
    map_points: int = 50_000

    @property
    def enabled(self) -> bool:
        return self.viewer != "off" or self.save is not None

    @property
    def ports(self) -> tuple[int, int]:
        """(gRPC port, web port) of "serve"."""
        return self.grpc_port or DEFAULT_GRPC_PORT, self.web_port or DEFAULT_WEB_PORT

    def check(self) -> None:
        """What can be checked before the run starts: the mode, the memory limit and, for "serve",
        that both ports are free (InputError naming the port and its flag)."""
        if self.viewer not in VIEWER_MODES:
            raise InputError(f"rerun viewer mode must be one of {VIEWER_MODES}, got {self.viewer!r}")
        check_memory_limit(self.memory_limit)
        if self.viewer == "serve":
            grpc_port, web_port = self.ports
            if grpc_port == web_port:
                raise InputError(f"--web-port {web_port}: the same port as --rerun-port; choose two ports")
            check_port_free(grpc_port, "--rerun-port")
            check_port_free(web_port, "--web-port")


class RerunLogger:
    """Logs per-frame outputs of the streaming runner to a Rerun recording."""

    def __init__(self, options: RerunOptions, name: str = "streamrecon"):
        options.check()
        self.options = options
        self.page_url: str | None = None
        self.rec = rr.RecordingStream("streamrecon", recording_id=uuid.uuid4())
        self.rec.send_recording_name(name)
        blueprint = default_blueprint()
        sinks: list = []
        if options.save is not None:
            path = Path(options.save)
            if not path.parent.is_dir():  # checked here: the run's --out folder exists by now
                raise InputError(f"--rrd {path}: cannot save the Rerun recording, folder {path.parent} "
                                 "does not exist")
            sinks.append(rr.FileSink(str(path)))
        if options.viewer == "spawn":
            self.rec.spawn(connect=False, default_blueprint=blueprint)
            sinks.append(rr.GrpcSink())
        elif options.viewer == "connect":
            sinks.append(rr.GrpcSink(options.url) if options.url else rr.GrpcSink())
        elif options.viewer == "serve":
            grpc_port, web_port = options.ports
            sinks.append(rr.GrpcServerSink(port=grpc_port, server_memory_limit=options.memory_limit))
        if sinks:
            self.rec.set_sinks(*sinks, default_blueprint=blueprint)
        if options.viewer == "serve":
            try:
                rr.serve_web_viewer(web_port=web_port, open_browser=False, connect_to=grpc_url(grpc_port))
            except RuntimeError as e:  # the port was taken between the check and now
                self.rec.disconnect()
                raise InputError(f"--web-port {web_port}: cannot serve the web viewer ({e}); choose "
                                 "another port with --web-port") from None
            self.page_url = viewer_page_url(web_port, grpc_port)
            print(f"rerun: web viewer at {self.page_url} (gRPC {grpc_url(grpc_port)}, buffer "
                  f"{options.memory_limit})", flush=True)
        self.rec.log("world", rr.ViewCoordinates.RDF, static=True)
        self._centres: list[np.ndarray] = []  # the current trajectory segment (+ the previous end)
        self._frames = 0
        self._depth_range: tuple[float, float] | None = None
        self._conf_range: tuple[float, float] | None = None
        self._rng = np.random.default_rng(0)
        self._open = True

    @property
    def serving(self) -> bool:
        """True while a "serve" logger still hosts its recording."""
        return self._open and self.options.viewer == "serve"

    def log_frame(self, pred: FramePrediction, metrics: dict[str, float]) -> None:
        """Log one frame's prediction (numpy, model resolution; OpenCV camera, cam2world) and the
        run's ``metrics`` (scalars under ``metrics/``).

        The depth and confidence colormap ranges are fixed by the first frame (:func:`image_range`;
        confidence from 1, its floor), so colours compare across frames."""
        index, image, depth, conf = pred.index, pred.image, pred.depth, pred.conf
        K, cam2world, world_points = pred.K, pred.cam2world, pred.world_points
        rec = self.rec
        rec.set_time("frame", sequence=index)
        h, w = depth.shape
        if self._depth_range is None:
            self._depth_range = (0.0, image_range(depth)[1])
            self._conf_range = image_range(conf, low=1.0)
        rec.log(
            "world/camera",
            rr.Transform3D(translation=cam2world[:3, 3], mat3x3=cam2world[:3, :3]),
            rr.Pinhole(image_from_camera=K, resolution=[w, h], camera_xyz=rr.ViewCoordinates.RDF),
        )
        rec.log("world/camera/image", rr.Image(image))
        rec.log("world/camera/depth", rr.DepthImage(depth.astype(np.float32), meter=1.0, colormap="turbo",
                                                    depth_range=self._depth_range))
        rec.log("world/camera/confidence", rr.DepthImage(conf.astype(np.float32), meter=1.0,
                                                         colormap="viridis", depth_range=self._conf_range))
        pts = world_points.reshape(-1, 3)
        cols = image.reshape(-1, 3)
        n = self.options.points_per_frame
        if len(pts) > n:
            pick = self._rng.choice(len(pts), n, replace=False)
            pts, cols = pts[pick], cols[pick]
        rec.log("world/points", rr.Points3D(pts, colors=cols, radii=-1.5))
        self._log_trajectory(cam2world[:3, 3].astype(np.float32))
        for key, value in metrics.items():
            rec.log(f"metrics/{key}", rr.Scalars(float(value)))

    def _log_trajectory(self, centre: np.ndarray) -> None:
        segment, offset = divmod(self._frames, TRAJECTORY_SEGMENT)
        if offset == 0 and self._centres:
            self._centres = self._centres[-1:]  # the new segment starts where the last one ended
        self._centres.append(centre)
        self._frames += 1
        self.rec.log(f"world/trajectory/{segment:04d}",
                     rr.LineStrips3D([np.stack(self._centres)], colors=[[255, 120, 0]], radii=-2.0))

    def log_map(self, index: int, points: np.ndarray, colors: np.ndarray) -> None:
        """Log the accumulated map (world frame) at frame ``index``, decimated to at most
        ``map_points`` points."""
        self.rec.set_time("frame", sequence=index)
        cap = self.options.map_points
        if len(points) > cap:
            pick = self._rng.choice(len(points), cap, replace=False)
            points, colors = points[pick], colors[pick]
        self.rec.log("world/map", rr.Points3D(points, colors=colors, radii=-1.0))

    def finish(self) -> None:
        """The run is over: flush every sink (the .rrd holds every frame after this). A "serve"
        logger keeps serving until :meth:`close`; any other is closed."""
        self.rec.flush()
        if not self.serving:
            self.close()

    def close(self) -> None:
        """Flush and disconnect every sink: the .rrd gets its footer, a server stops. The flush
        waits at most ``CLOSE_FLUSH_S`` seconds (a slow or stuck web-viewer client must not keep
        a Ctrl-C from ending the process); past that a warning says the .rrd may be incomplete."""
        if self._open:
            self._open = False
            try:
                self.rec.flush(timeout_sec=CLOSE_FLUSH_S)
            except Exception as e:  # rerun raises on the timeout; its type is not part of the API
                print(f"rerun: the recording did not finish flushing within {CLOSE_FLUSH_S:.0f} s "
                      f"({e}); a saved .rrd may be incomplete", flush=True)
            self.rec.disconnect()
