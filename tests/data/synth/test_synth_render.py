"""Synthetic generator: ray-cast geometry against closed forms, dynamic masks, paths, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.synth import ROOM_FACES, Renderer, Scene, SceneObject, SynthConfig, synthetic_sequence
from data.synth.dynamics import Motion, random_motion
from data.synth.textures import random_texture
from data.synth.trajectories import TRAJECTORY_KINDS, camera_trajectory, look_rotation
from recon.errors import ConfigError
from recon.geometry import transform_points, unproject_depth

LO, HI = np.array([-2.0, 0.0, -3.0]), np.array([2.0, 3.0, 3.0])


def _scene(objects: list[SceneObject], seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    textures = [random_texture(rng) for _ in range(ROOM_FACES + len(objects))]
    return Scene(lo=LO, hi=HI, objects=objects, textures=textures, light_position=np.array([0.5, 2.7, 0.3]))


def _static(kind: str, size, center, yaw: float = 0.0) -> SceneObject:
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return SceneObject(kind, np.asarray(size, float), Motion(center0=np.asarray(center, float), rotation0=R))


def _pose(position, forward, roll: float = 0.0) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = look_rotation(np.asarray(forward, float)[None], np.array([roll]))[0]
    T[:3, 3] = position
    return T


K = np.array([[100.0, 0.0, 32.0], [0.0, 100.0, 24.0], [0.0, 0.0, 1.0]])  # 64 x 48, centre pixel (32, 24)


def test_wall_at_known_distance_gives_exactly_that_depth():
    # Camera 1.2 m from the back wall z = -3 ... looking along +z at the wall z = 3 from z = 0.5.
    out = Renderer(_scene([]), 64, 48).render(K, _pose([0.3, 1.4, 0.5], [0, 0, 1]), frame=0)
    # Half-fov atan(32/100) keeps every pixel on the 4 x 3 m wall at distance 2.5 m.
    assert torch.equal(out["ids"], torch.full((48, 64), 5))
    torch.testing.assert_close(out["depth"], torch.full((48, 64), 2.5), rtol=0, atol=1e-5)
    torch.testing.assert_close(out["normal"][10, 10], torch.tensor([0.0, 0.0, -1.0]))


def test_sphere_depth_matches_closed_form():
    r, center = 0.4, np.array([0.0, 1.5, 2.0])
    scene = _scene([_static("ellipsoid", [r, r, r], center)])
    cam = _pose([0.0, 1.5, 0.0], [0, 0, 1])
    out = Renderer(scene, 64, 48).render(K, cam, frame=0)
    assert abs(out["depth"][24, 32].item() - (2.0 - r)) < 1e-5  # centre pixel looks at the centre
    # Every sphere pixel: the nearer root of |o + t d - c| = r with d = R (x, y, 1), in float64.
    v, u = np.nonzero(out["ids"].numpy() == ROOM_FACES)
    assert len(u) > 200
    d = np.stack([(u - 32.0) / 100.0, (v - 24.0) / 100.0, np.ones_like(u, float)], -1) @ cam[:3, :3].T
    oc = cam[:3, 3] - center
    a, b, c = (d * d).sum(-1), 2 * (d @ oc), oc @ oc - r * r
    t = (-b - np.sqrt(b * b - 4 * a * c)) / (2 * a)
    np.testing.assert_allclose(out["depth"].numpy()[v, u], t, rtol=2e-6, atol=2e-6)


def _surface_distance(obj: SceneObject, points: np.ndarray) -> np.ndarray:
    """First-order metric distance |F| / |grad_p F| of world points to the primitive's surface F = 0.

    F is the canonical implicit function (see data/synth/primitives.py) of q = R^T (p - c) / size;
    grad_p F = R diag(1 / size) grad_q F. A point off a face's extent (e.g. beyond a cap's rim) gets
    that overshoot added, so only true surface points give ~0.
    """
    q = ((points - obj.motion.center0) @ obj.motion.rotation0) / obj.size
    x, y, z = q.T
    radial = np.hypot(x, z)

    def dist(F, grad):
        return np.abs(F) / np.linalg.norm(grad / obj.size, axis=-1)

    zero, one = np.zeros_like(x), np.ones_like(x)
    if obj.kind == "box":
        axis = np.abs(q).argmax(-1)
        return np.abs(np.abs(q).max(-1) - 1.0) * obj.size[axis]
    if obj.kind == "ellipsoid":
        return dist((q * q).sum(-1) - 1.0, 2 * q)
    if obj.kind == "cylinder":
        side = dist(radial**2 - 1.0, np.stack([2 * x, zero, 2 * z], -1)) + np.maximum(np.abs(y) - 1, 0)
        cap = dist(np.abs(y) - 1.0, np.stack([zero, one, zero], -1)) + np.maximum(radial - 1, 0)
        return np.minimum(side, cap)
    side = dist(radial**2 - (0.5 * (1 - y)) ** 2, np.stack([2 * x, 0.5 * (1 - y), 2 * z], -1))
    base = dist(y + 1.0, np.stack([zero, one, zero], -1)) + np.maximum(radial - 1, 0)
    return np.minimum(side + np.maximum(np.abs(y) - 1, 0), base)


@pytest.mark.parametrize("roll", [0.0, 0.4], ids=["level", "rolled"])
def test_unprojected_depth_lands_on_the_hit_surface(roll):
    objects = [
        _static("box", [0.3, 0.4, 0.5], [-0.8, 0.4, 1.5], yaw=0.6),
        _static("ellipsoid", [0.3, 0.2, 0.4], [0.7, 0.9, 1.8], yaw=-0.3),
        _static("cylinder", [0.25, 0.6, 0.25], [0.0, 0.6, 2.3]),
        _static("cone", [0.3, 0.5, 0.3], [0.6, 0.5, 0.6], yaw=1.0),
    ]
    scene = _scene(objects)
    cam = _pose([0.1, 1.3, -1.0], [0.05, -0.35, 1.0], roll=roll)
    out = Renderer(scene, 64, 48).render(K, cam, frame=0)
    world = transform_points(
        torch.from_numpy(cam), unproject_depth(out["depth"].double(), torch.from_numpy(K)).reshape(-1, 3)
    ).numpy()
    ids = out["ids"].reshape(-1).numpy()
    for face in range(ROOM_FACES):
        axis, side = divmod(face, 2)
        on = ids == face
        plane = HI[axis] if side else LO[axis]
        np.testing.assert_allclose(world[on, axis], plane, atol=2e-5, err_msg=f"room face {face}")
    for j, obj in enumerate(objects):
        on = ids == ROOM_FACES + j
        assert on.sum() > 20, f"{obj.kind} not visible"
        assert _surface_distance(obj, world[on]).max() < 2e-5, obj.kind  # metres (float32 ray casting)


def test_dynamic_mask_marks_exactly_the_moving_object():
    mover = SceneObject(
        "ellipsoid",
        np.full(3, 0.3),
        random_motion(
            np.random.default_rng(1), "oscillate", np.array([0.0, 1.3, 1.8]), np.eye(3), speed=0.05
        ),
    )
    still = _static("box", [0.3, 0.3, 0.3], [-1.0, 0.3, 2.0])
    cam = _pose([0.0, 1.4, -0.5], [0, -0.1, 1])
    with_mover = Renderer(_scene([still, mover]), 64, 48)
    without = Renderer(_scene([still]), 64, 48)
    for frame in (0.0, 40.0, 77.0):
        a, b = with_mover.render(K, cam, frame), without.render(K, cam, frame)
        occluding = a["depth"] < b["depth"] - 1e-6  # the mover is in front of whatever it hides
        assert occluding.any()
        assert torch.equal(a["mask"], occluding)
        assert torch.equal(a["mask"], a["ids"] == ROOM_FACES + 1)
    m0, m1 = with_mover.render(K, cam, 0.0)["mask"], with_mover.render(K, cam, 40.0)["mask"]
    assert not torch.equal(m0, m1), "the dynamic object should move between frames 0 and 40"


def test_same_seed_same_frames_any_order_and_other_seed_differs():
    config = SynthConfig(num_frames=30, width=48, height=32, num_dynamic=2, trajectory="mixed")
    a, b, c = (synthetic_sequence(config, seed=s) for s in (5, 5, 6))
    fa = [a[i] for i in (0, 17, 29)]
    fb = [b[i] for i in (29, 17, 0)][::-1]
    for x, y in zip(fa, fb, strict=True):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.depth, y.depth)
        assert np.array_equal(x.cam2world, y.cam2world) and np.array_equal(x.mask, y.mask)
        assert x.depth.dtype == np.float32 and x.image.dtype == np.uint8 and (x.depth > 0).all()
    assert not np.array_equal(fa[0].image, c[0].image)


@pytest.mark.parametrize("kind", TRAJECTORY_KINDS)
def test_camera_paths_are_smooth_inside_the_room_and_clear_of_objects(kind):
    config = SynthConfig(num_frames=3000, width=16, height=12, trajectory=kind, num_dynamic=2)
    seq = synthetic_sequence(config, seed=11)
    built = seq.load.built
    T = built.cam2world
    pos = T[:, :3, 3]
    lo, hi = built.scene.lo, built.scene.hi
    assert (pos > lo + 0.5).all() and (pos < hi - 0.5).all()
    step = np.linalg.norm(np.diff(pos, axis=0), axis=-1)
    assert step.max() < 4 * config.camera_speed, f"max step {step.max():.4f} m"
    cos = (np.einsum("nij,nij->n", T[1:, :3, :3], T[:-1, :3, :3]) - 1.0) / 2.0
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 3.0  # degrees of rotation per frame
    np.testing.assert_allclose(
        T[:, :3, :3].transpose(0, 2, 1) @ T[:, :3, :3], np.broadcast_to(np.eye(3), (len(T), 3, 3)), atol=1e-9
    )
    frames = np.arange(len(T), dtype=float)
    for obj in built.scene.objects:
        gap = np.linalg.norm(pos - obj.motion.centers(frames), axis=-1).min()
        assert gap > obj.radius, f"camera inside the bounding sphere of a {obj.role}"
    assert len(built.scene.objects) >= 6


def test_loop_revisits_places():
    T = camera_trajectory("loop", 2000, LO, HI, np.random.default_rng(3))
    pos = T[:, :3, 3]
    far_apart = np.abs(np.arange(2000)[:, None] - np.arange(2000)[None, :]) > 150
    dist = np.linalg.norm(pos[::10, None] - pos[None, ::10], axis=-1)
    assert (dist[far_apart[::10, ::10]] < 0.05).any()


def test_ten_thousand_frames_stream_without_holding_images():
    seq = synthetic_sequence(SynthConfig(num_frames=10_000, width=32, height=24, num_dynamic=1), seed=2)
    last = seq[9_999]
    assert (
        last.index == 9_999
        and last.image.shape == (24, 32, 3)
        and last.timestamp == pytest.approx(9_999 / 30)
    )
    assert np.isfinite(last.cam2world).all()


@pytest.mark.parametrize(
    "field,value",
    [("num_frames", 0), ("trajectory", "spiral"), ("fov_range", (80.0, 40.0)), ("width", 4)],
    ids=["no-frames", "unknown-path", "fov-order", "tiny"],
)
def test_bad_config_raises_config_error(field, value):
    with pytest.raises(ConfigError, match=field.split("_")[0]):
        synthetic_sequence(SynthConfig(**{field: value}), seed=0)


def test_cast_shadows_are_exactly_where_the_light_is_blocked():
    r, center = 0.35, np.array([0.4, 1.2, 1.0])
    scene = _scene([_static("ellipsoid", [r, r, r], center)])
    scene.light_position = np.array([0.4, 2.8, 1.0])  # straight above the ball
    cam = _pose([0.0, 2.0, -1.5], [0.1, -0.9, 1.0])
    lit = Renderer(scene, 64, 48, shadows=False).render(K, cam, 0)
    shaded = Renderer(scene, 64, 48, shadows=True).render(K, cam, 0)
    assert torch.equal(lit["depth"], shaded["depth"])
    differs = (lit["image"].int() - shaded["image"].int()).abs().sum(-1).numpy() > 0
    # Independent float64 reference: does the segment from the surface point to the light cross the ball?
    world = transform_points(
        torch.from_numpy(cam), unproject_depth(lit["depth"].double(), torch.from_numpy(K))
    )
    p = world.numpy().reshape(-1, 3)
    d = scene.light_position - p
    oc = p - center
    a, b, c = (d * d).sum(-1), 2 * (d * oc).sum(-1), (oc * oc).sum(-1) - r * r
    disc = b * b - 4 * a * c
    t_far = (-b + np.sqrt(np.maximum(disc, 0))) / (2 * a)
    on_ball = lit["ids"].numpy().reshape(-1) == ROOM_FACES
    blocked = (disc > 0) & (t_far > 0) & ~on_ball
    clearly = (disc > 0.05 * b * b) & (t_far > 0.05) & ~on_ball  # well inside the shadow (not its rim)
    near = (disc > -0.05 * b * b) & ~on_ball  # the shadow and a thin rim around it
    assert clearly.sum() > 30, "the test scene should have a visible shadow"
    assert differs.reshape(-1)[clearly].all()
    assert not differs.reshape(-1)[~near & ~on_ball].any()
    assert blocked.sum() > 0


def test_supersampling_smooths_the_image_and_keeps_centre_geometry():
    scene = _scene([_static("box", [0.3, 0.4, 0.5], [-0.5, 0.4, 1.5], yaw=0.6)], seed=3)
    cam = _pose([0.1, 1.3, -1.0], [0.05, -0.35, 1.0])
    one = Renderer(scene, 64, 48).render(K, cam, 0)
    three = Renderer(scene, 64, 48, supersample=3).render(K, cam, 0)
    torch.testing.assert_close(three["depth"], one["depth"], rtol=1e-6, atol=1e-6)
    assert torch.equal(three["ids"], one["ids"]) and torch.equal(three["mask"], one["mask"])
    # Box filter = the mean of the 3x3 sub-pixel renders in linear light (independent re-render).
    fine = Renderer(scene, 192, 144).render(torch_free_resize(K, 3), cam, 0)["image"].double() / 255
    expected = (fine**2.2).reshape(48, 3, 64, 3, 3).mean(dim=(1, 3)) ** (1 / 2.2) * 255
    assert (three["image"].double() - expected).abs().max() <= 1.5  # uint8 rounding of both renders
    lap = lambda im: (
        im[1:-1, 1:-1].double() * 4 - im[:-2, 1:-1] - im[2:, 1:-1] - im[1:-1, :-2] - im[1:-1, 2:]
    ).abs()
    assert lap(three["image"]).mean() < lap(one["image"]).mean()  # less high-frequency aliasing


def torch_free_resize(K: np.ndarray, s: int) -> np.ndarray:
    """K of an image s times larger (pixel centres at integers): c' = (c + 0.5) s - 0.5."""
    out = K.copy()
    out[:2, :2] *= s
    out[:2, 2] = (K[:2, 2] + 0.5) * s - 0.5
    return out
