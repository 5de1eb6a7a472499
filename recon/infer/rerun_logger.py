"""Live / saved Rerun visualisation of a streaming run (rerun-sdk 0.41 API).

Entity tree (OpenCV camera = Rerun RDF):
    world                      ViewCoordinates.RDF (static)
    world/camera               Transform3D (cam2world) + Pinhole (K, resolution)
    world/camera/image         Image (RGB)
    world/camera/depth         DepthImage (model units)
    world/camera/confidence    Image (float confidence)
    world/points               Points3D, this frame's points (subsampled)
    world/map                  Points3D, the accumulated map (every few frames)
    world/trajectory           LineStrips3D, camera centres so far
    metrics/{fps,latency_ms,rss_mb}   Scalars
on the sequence timeline ``frame``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rerun as rr
import rerun.blueprint as rrb

from recon.errors import InputError

VIEWER_MODES = ("off", "spawn", "serve", "connect")


def default_blueprint() -> rrb.Blueprint:
    """3D view beside image / depth / confidence views, with the metrics plots below."""
    return rrb.Blueprint(
        rrb.Vertical(
            rrb.Horizontal(
                rrb.Spatial3DView(origin="world", name="3D"),
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


@dataclass
class RerunOptions:
    """Where the recording goes.

    Attributes:
        viewer: "off", "spawn" (start a native viewer), "serve" (host a gRPC server and the web
            viewer), or "connect" (stream to a running viewer at ``url``).
        save: path of an .rrd file to write (also works together with a viewer mode).
        url: gRPC url for "connect" (default ``rerun+http://127.0.0.1:9876/proxy``).
        web_port: port of the web viewer for "serve".
        points_per_frame: how many of a frame's points to log.
        map_every: log the accumulated map and the trajectory every this many frames.
        map_points: at most this many map points / trajectory vertices per log (keeps a 10,000
            frame recording in the hundreds of MB, not tens of GB).
    """

    viewer: str = "off"
    save: str | None = None
    url: str | None = None
    web_port: int | None = None
    points_per_frame: int = 5000
    map_every: int = 25
    map_points: int = 50_000

    @property
    def enabled(self) -> bool:
        return self.viewer != "off" or self.save is not None


class RerunLogger:
    """Logs per-frame outputs of the streaming runner to a Rerun recording."""

    def __init__(self, options: RerunOptions, name: str = "streamrecon"):
        if options.viewer not in VIEWER_MODES:
            raise InputError(f"rerun viewer mode must be one of {VIEWER_MODES}, got {options.viewer!r}")
        self.options = options
        self.rec = rr.RecordingStream("streamrecon", recording_id=uuid.uuid4())
        self.rec.send_recording_name(name)
        blueprint = default_blueprint()
        sinks: list = []
        if options.save is not None:
            path = Path(options.save)
            if not path.parent.exists():
                raise InputError(f"cannot save the Rerun recording: folder {path.parent} does not exist")
            sinks.append(rr.FileSink(str(path)))
        if options.viewer == "spawn":
            self.rec.spawn(connect=False, default_blueprint=blueprint)
            sinks.append(rr.GrpcSink())
        elif options.viewer == "connect":
            sinks.append(rr.GrpcSink(options.url) if options.url else rr.GrpcSink())
        if sinks:
            self.rec.set_sinks(*sinks, default_blueprint=blueprint)
        if options.viewer == "serve":
            url = self.rec.serve_grpc(default_blueprint=blueprint)
            rr.serve_web_viewer(web_port=options.web_port, open_browser=False, connect_to=url)
            print(f"rerun: web viewer serving {url}")
        self.rec.log("world", rr.ViewCoordinates.RDF, static=True)
        self._centres: list[np.ndarray] = []
        self._rng = np.random.default_rng(0)

    def log_frame(
        self,
        index: int,
        image: np.ndarray,
        depth: np.ndarray,
        conf: np.ndarray,
        K: np.ndarray,
        cam2world: np.ndarray,
        world_points: np.ndarray,
        metrics: dict[str, float],
    ) -> None:
        """Log one frame. Arrays are numpy: image [H,W,3] uint8, depth/conf [H,W], K [3,3],
        cam2world [4,4] (OpenCV camera), world_points [H,W,3]."""
        rec = self.rec
        rec.set_time("frame", sequence=index)
        h, w = depth.shape
        rec.log(
            "world/camera",
            rr.Transform3D(translation=cam2world[:3, 3], mat3x3=cam2world[:3, :3]),
            rr.Pinhole(image_from_camera=K, resolution=[w, h], camera_xyz=rr.ViewCoordinates.RDF),
        )
        rec.log("world/camera/image", rr.Image(image))
        rec.log("world/camera/depth", rr.DepthImage(depth.astype(np.float32), meter=1.0))
        rec.log("world/camera/confidence", rr.Image(conf.astype(np.float32)))
        pts = world_points.reshape(-1, 3)
        cols = image.reshape(-1, 3)
        n = self.options.points_per_frame
        if len(pts) > n:
            pick = self._rng.choice(len(pts), n, replace=False)
            pts, cols = pts[pick], cols[pick]
        rec.log("world/points", rr.Points3D(pts, colors=cols, radii=-1.5))
        self._centres.append(cam2world[:3, 3].astype(np.float32))
        for key, value in metrics.items():
            rec.log(f"metrics/{key}", rr.Scalars(float(value)))

    def log_map(self, index: int, points: np.ndarray, colors: np.ndarray) -> None:
        """Log the accumulated map (world frame) and the trajectory so far at frame ``index``,
        each decimated to at most ``map_points`` entries."""
        self.rec.set_time("frame", sequence=index)
        cap = self.options.map_points
        if len(points) > cap:
            pick = self._rng.choice(len(points), cap, replace=False)
            points, colors = points[pick], colors[pick]
        self.rec.log("world/map", rr.Points3D(points, colors=colors, radii=-1.0))
        if self._centres:
            centres = np.stack(self._centres)
            if len(centres) > cap:
                centres = centres[np.linspace(0, len(centres) - 1, cap).round().astype(int)]
            self.rec.log("world/trajectory", rr.LineStrips3D([centres], colors=[[255, 120, 0]]))

    def close(self) -> None:
        """Flush everything to the sinks (the .rrd is complete after this)."""
        self.rec.flush()
        self.rec.disconnect()
