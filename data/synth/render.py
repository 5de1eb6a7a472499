"""Vectorised ray casting of a procedural scene: image, z-depth, surface ids, dynamic mask, normals.

One primary ray per pixel centre, all pixels at once (torch, float32): the room and every
object are intersected analytically (primitives.py), the nearest hit wins, its solid texture is
evaluated in the surface's own frame (textures.py) and shaded Lambertian by a point light with an
ambient term and cast shadows (one shadow ray per lit pixel against every object).

Conventions: OpenCV camera (x right, y down, z forward), ``cam2world`` 4x4, K in pixels with pixel
centres at integer coordinates, depth = z-depth in metres. Primary ray directions have camera-frame
z = 1, so the ray parameter of a hit IS its z-depth. Every pixel sees a room face, so depth > 0
everywhere.
"""

from __future__ import annotations

import numpy as np
import torch

from data.synth.primitives import canonical_normal, dot3, intersect_canonical, room_exit
from data.synth.scene import ROOM_FACES, Scene
from data.synth.textures import shade_textures, texture_table
from recon.geometry import pixel_rays, resize_intrinsics


class Renderer:
    """Renders frames of one scene at a fixed resolution.

    Args:
        scene: the scene (room, objects with their motions, textures, light).
        width, height: image size in pixels.
        shadows: cast shadows from the point light (one extra ray per lit pixel).
        device: torch device for the computation.
        num_threads: torch CPU threads while rendering (restored afterwards); 1 is fastest for these
            many small element-wise ops on a shared CPU (bench_synth.py measures it); None keeps
            torch's setting.
        supersample: odd s >= 1: s x s rays per pixel, the image is their mean in linear light
            (anti-aliased textures and edges, s^2 times the work); depth, ids, mask and normals
            stay those of the ray through the pixel centre (the centre sample), so geometry is
            exact and unchanged.

    Example:
        >>> from data.synth.scene import random_room, sample_scene
        >>> rng = np.random.default_rng(0)
        >>> lo, hi = random_room(rng)
        >>> cam2world = np.eye(4); cam2world[:3, 3] = (lo + hi) / 2
        >>> scene = sample_scene(rng, cam2world[None], lo, hi)
        >>> K = np.array([[100.0, 0, 63.5], [0, 100.0, 47.5], [0, 0, 1]])
        >>> out = Renderer(scene, 128, 96).render(K, cam2world, frame=0)
        >>> tuple(out["image"].shape), out["image"].dtype, bool((out["depth"] > 0).all())
        ((96, 128, 3), torch.uint8, True)
    """

    def __init__(
        self,
        scene: Scene,
        width: int,
        height: int,
        shadows: bool = True,
        device: torch.device | str = "cpu",
        num_threads: int | None = 1,
        supersample: int = 1,
    ) -> None:
        if supersample < 1 or supersample % 2 == 0:
            raise ValueError(f"supersample: expected an odd integer >= 1, got {supersample}")
        self.supersample = supersample
        self.scene, self.width, self.height, self.shadows = scene, width, height, shadows
        self.num_threads = num_threads
        self.device = torch.device(device)
        self._table = texture_table(scene.textures, self.device)
        self._lo = torch.tensor(scene.lo, dtype=torch.float32, device=self.device)
        self._hi = torch.tensor(scene.hi, dtype=torch.float32, device=self.device)
        self._light = torch.tensor(scene.light_position, dtype=torch.float32, device=self.device)
        self._dynamic = torch.zeros(ROOM_FACES + len(scene.objects), dtype=torch.bool, device=self.device)
        self._dynamic[scene.dynamic_ids] = True

    def object_poses(self, frame: float) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(center [3], world-from-object rotation [3, 3], half sizes [3]) of every object at ``frame``."""
        poses = []
        for obj in self.scene.objects:
            c = obj.motion.centers(np.array([frame]))[0]
            R = obj.motion.rotations(np.array([frame]))[0]
            poses.append(
                tuple(torch.tensor(a, dtype=torch.float32, device=self.device) for a in (c, R, obj.size))
            )
        return poses

    @staticmethod
    def _candidates(o, d, c, radius: float, t_max: torch.Tensor) -> torch.Tensor:
        """Indices of rays that meet the bounding sphere (|p - c| <= radius) at some t < t_max.

        A cheap pre-test: the exact intersection then runs on these rays only (most objects
        cover a small part of the image).
        """
        oc = o - c
        a = dot3(d, d)
        b = dot3(d, oc)
        disc = b * b - a * (dot3(oc, oc) - radius * radius)
        sq = torch.sqrt(disc.clamp_min(0.0))
        return torch.nonzero((disc >= 0) & (-b + sq > 0) & (-b - sq < a * t_max)).squeeze(-1)

    def _nearest_object(self, o, d, poses, t_best, ids):
        for j, (obj, (c, R, S)) in enumerate(zip(self.scene.objects, poses, strict=True)):
            sel = self._candidates(o, d, c, obj.radius, t_best)
            if sel.numel() == 0:
                continue
            t = intersect_canonical(obj.kind, ((o[sel] - c) @ R) / S, (d[sel] @ R) / S)
            closer = t < t_best[sel]
            t_best[sel] = torch.where(closer, t, t_best[sel])
            ids[sel] = torch.where(closer, torch.full_like(ids[sel], ROOM_FACES + j), ids[sel])
        return t_best, ids

    def _occluded(self, o, d, poses) -> torch.Tensor:
        """True where the segment o -> o + d (t in (0, 1)) hits any object."""
        hit = torch.zeros(o.shape[0], dtype=torch.bool, device=self.device)
        one = torch.ones(o.shape[0], dtype=o.dtype, device=self.device)
        for obj, (c, R, S) in zip(self.scene.objects, poses, strict=True):
            sel = self._candidates(o, d, c, obj.radius, one)
            if sel.numel() == 0:
                continue
            hit[sel] |= intersect_canonical(obj.kind, ((o[sel] - c) @ R) / S, (d[sel] @ R) / S) < 1.0
        return hit

    def render(self, K: np.ndarray, cam2world: np.ndarray, frame: float) -> dict[str, torch.Tensor]:
        """Render one frame.

        Args:
            K: [3, 3] intrinsics (pixels).
            cam2world: [4, 4] camera pose (OpenCV camera, world metres).
            frame: frame index (fractional allowed) at which to pose the moving objects.

        Returns:
            dict with "image" [H, W, 3] uint8 sRGB, "depth" [H, W] float32 z-depth metres (> 0),
            "ids" [H, W] int64 surface ids (scene.py), "mask" [H, W] bool (dynamic objects),
            "normal" [H, W, 3] float32 world unit normals facing the camera.
        """
        previous = torch.get_num_threads()
        if self.num_threads is not None and self.device.type == "cpu":
            torch.set_num_threads(self.num_threads)
        try:
            with torch.no_grad():
                return self._render(K, cam2world, frame)
        finally:
            torch.set_num_threads(previous)

    def _render(self, K: np.ndarray, cam2world: np.ndarray, frame: float) -> dict[str, torch.Tensor]:
        s, H, W = self.supersample, self.height, self.width
        K_t = torch.as_tensor(np.asarray(K), dtype=torch.float32, device=self.device)
        if s > 1:  # an s x s grid per pixel; with s odd its centre sample is the pixel centre
            K_t, H, W = resize_intrinsics(K_t, float(s), float(s)), H * s, W * s
        T = torch.as_tensor(np.asarray(cam2world), dtype=torch.float32, device=self.device)
        d = pixel_rays(K_t, H, W).reshape(-1, 3) @ T[:3, :3].T  # camera z = 1: t is z-depth
        o = T[:3, 3].expand_as(d)
        poses = self.object_poses(frame)

        t_best, ids = room_exit(o, d, self._lo, self._hi)
        t_best, ids = self._nearest_object(o, d, poses, t_best, ids)
        p = o + t_best[:, None] * d

        # Normals and texture coordinates: room faces in world coordinates, objects in their own
        # frame (object-local metres) so textures move with the object.
        local = p.clone()
        normal = torch.zeros_like(p)
        room = ids < ROOM_FACES
        axis = torch.div(ids[room], 2, rounding_mode="floor")
        inward = 1.0 - 2.0 * (ids[room] % 2).to(torch.float32)  # lo faces point +, hi faces point -
        normal[room] = torch.nn.functional.one_hot(axis, 3).to(torch.float32) * inward[:, None]
        for j, (obj, (c, R, S)) in enumerate(zip(self.scene.objects, poses, strict=True)):
            sel = ids == ROOM_FACES + j
            if not bool(sel.any()):
                continue
            q = ((p[sel] - c) @ R) / S
            local[sel] = q * S
            normal[sel] = (canonical_normal(obj.kind, q) / S) @ R.T
        normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)

        albedo = shade_textures(local, ids, self._table)
        to_light = self._light - p
        dist2 = dot3(to_light, to_light)
        lambert = (dot3(normal, to_light) / dist2.sqrt()).clamp_min(0.0)
        if self.shadows and self.scene.objects:
            lit = lambert > 0
            shadow = torch.zeros_like(lit)
            shadow[lit] = self._occluded(p[lit] + 1e-3 * normal[lit], to_light[lit], poses)
            lambert = torch.where(shadow, torch.zeros_like(lambert), lambert)
        falloff = 6.0 / (6.0 + dist2)  # inverse-square, softened near the light
        irradiance = self.scene.ambient + self.scene.light_intensity * lambert * falloff
        radiance = torch.clamp(albedo * irradiance[:, None], 0.0, 1.0).reshape(H, W, 3)
        depth, ids, normal = t_best.reshape(H, W), ids.reshape(H, W), normal.reshape(H, W, 3)
        if s > 1:  # box-filter the radiance (linear light); geometry from the centre samples
            H, W = self.height, self.width
            radiance = radiance.reshape(H, s, W, s, 3).mean(dim=(1, 3))
            depth, ids = depth[s // 2 :: s, s // 2 :: s], ids[s // 2 :: s, s // 2 :: s]
            normal = normal[s // 2 :: s, s // 2 :: s]
        image = (radiance ** (1.0 / 2.2) * 255.0 + 0.5).to(torch.uint8)
        return {
            "image": image,
            "depth": depth.contiguous(),
            "ids": ids.contiguous(),
            "mask": self._dynamic[ids],
            "normal": normal.contiguous(),
        }
