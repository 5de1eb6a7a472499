"""Tiny datasets written in each reader's exact on-disk format, from an analytic scene.

The scene is a closed room (an axis-aligned box seen from inside) with a sphere in it, ray cast
here in numpy, independently of the product's renderer. Cameras are random rigid poses near the
room's centre looking roughly along +z. Ground truth is kept in our conventions (OpenCV camera,
cam2world, z-depth in metres, K in pixels with integer pixel centres); every writer converts it to
the dataset's own conventions with formulas written here, separately from the readers, so a test
that reads the files back and lands unprojected depth on the scene checks both directions.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

ROOM_LO = np.array([-3.0, -1.5, -2.0])
ROOM_HI = np.array([3.0, 1.5, 6.5])
SPHERE_C = np.array([0.4, 0.3, 3.2])
SPHERE_R = 0.7
COLOURS = np.array(
    [
        [200, 60, 60],
        [60, 200, 60],
        [60, 60, 200],
        [200, 200, 60],
        [60, 200, 200],
        [200, 60, 200],
        [230, 230, 230],
    ],
    dtype=np.float64,
)


def scene_distance(points: np.ndarray) -> np.ndarray:
    """Unsigned distance [N] of world points [N, 3] to the nearest scene surface (walls or sphere)."""
    centre, half = (ROOM_LO + ROOM_HI) / 2, (ROOM_HI - ROOM_LO) / 2
    q = np.abs(points - centre) - half
    box_sdf = np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(axis=-1), 0)
    sphere_sdf = np.linalg.norm(points - SPHERE_C, axis=-1) - SPHERE_R
    return np.minimum(np.abs(box_sdf), np.abs(sphere_sdf))


def raycast(K: np.ndarray, cam2world: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Z-depth [H, W] float64 and RGB [H, W, 3] uint8 of the scene seen by an OpenCV camera."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    d = d_cam @ cam2world[:3, :3].T  # |d_cam.z| = 1, so the ray parameter t is the z-depth
    o = cam2world[:3, 3]
    with np.errstate(divide="ignore"):
        t_lo, t_hi = (ROOM_LO - o) / d, (ROOM_HI - o) / d
    t_axes = np.where(d > 0, t_hi, t_lo)  # exit distance through each pair of walls
    axis = t_axes.argmin(-1)
    t = t_axes.min(-1)
    wall = 2 * axis + (np.take_along_axis(d, axis[:, None], 1)[:, 0] > 0)
    oc = o - SPHERE_C
    b = d @ oc
    a = (d * d).sum(-1)
    disc = b * b - a * (oc @ oc - SPHERE_R**2)
    t_s = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / a, np.inf)
    hit_sphere = (t_s > 0) & (t_s < t)
    t = np.where(hit_sphere, t_s, t)
    surface = np.where(hit_sphere, 6, wall)
    p = o + t[:, None] * d
    checker = (np.floor(p * 2.0).sum(-1) % 2) * 0.4 + 0.6
    rgb = np.clip(COLOURS[surface] * checker[:, None], 0, 255).round().astype(np.uint8)
    return t.reshape(height, width), rgb.reshape(height, width, 3)


@dataclass
class GroundTruth:
    """Frames in our conventions: images [N,H,W,3] uint8, depth [N,H,W] float64 metres,
    K [N,3,3] pixels, cam2world [N,4,4] OpenCV, timestamps [N] seconds."""

    images: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    cam2world: np.ndarray
    timestamps: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        return self.images.shape[2], self.images.shape[1]


def random_pose(rng: np.random.Generator) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("yxz", rng.uniform([-20, -12, -8], [20, 12, 8]), degrees=True).as_matrix()
    T[:3, 3] = rng.uniform([-0.4, -0.3, -0.3], [0.4, 0.3, 0.5])
    return T


def default_K(width: int, height: int) -> np.ndarray:
    """Slightly anisotropic, off-centre intrinsics so axis or half-pixel mix-ups show."""
    f = width / 2 / np.tan(np.radians(30))
    return np.array([[f * 1.02, 0, (width - 1) / 2 + 0.7], [0, f * 0.98, (height - 1) / 2 - 0.6], [0, 0, 1]])


def render(
    n: int = 3, width: int = 32, height: int = 24, K: np.ndarray | None = None, seed: int = 0
) -> GroundTruth:
    rng = np.random.default_rng(seed)
    K = default_K(width, height) if K is None else np.asarray(K, dtype=np.float64)
    poses = np.stack([random_pose(rng) for _ in range(n)])
    frames = [raycast(K, T, width, height) for T in poses]
    return GroundTruth(
        images=np.stack([f[1] for f in frames]),
        depth=np.stack([f[0] for f in frames]),
        K=np.repeat(K[None], n, 0),
        cam2world=poses,
        timestamps=1305031102.175304 + np.arange(n) / 30.0,
    )


@dataclass
class Written:
    """A fixture on disk: what to pass to load_sequence, the truth, and the reading tolerances."""

    root: Path
    format: str
    gt: GroundTruth
    point_tol: float  # metres: quantisation of the stored depth (and poses) seen along a ray
    image_exact: bool = True  # lossless images (PNG); JPEG otherwise
    invalid: np.ndarray | None = None  # [N, H, W] bool pixels written as "no depth"
    options: dict | None = None


# ---------------------------------------------------------------------------------------------
# small helpers


def imwrite_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    jpeg = [
        cv2.IMWRITE_JPEG_QUALITY,
        98,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    ]
    params = jpeg if path.suffix.lower() in (".jpg", ".jpeg") else []
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params), path


def imwrite_u16(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert values.dtype == np.uint16
    assert cv2.imwrite(str(path), values), path


def quantise(depth: np.ndarray, units_per_metre: float, invalid: np.ndarray | None = None, code: int = 0):
    raw = np.round(depth * units_per_metre)
    assert raw.max() < 65535, "scene too deep for this format"
    raw = raw.astype(np.uint16)
    if invalid is not None:
        raw[invalid] = code
    return raw


def upsample2(img: np.ndarray) -> np.ndarray:
    """Pixel repetition: an area-filter downsample by 2 gives the original back exactly."""
    return np.repeat(np.repeat(img, 2, axis=0), 2, axis=1)


def K_upsampled2(K: np.ndarray) -> np.ndarray:
    """Intrinsics of a 2x larger image (pixel centres at integers): f * 2, c -> (c + 0.5) * 2 - 0.5."""
    out = K.copy()
    out[:2, :2] *= 2
    out[:2, 2] = (K[:2, 2] + 0.5) * 2 - 0.5
    return out


def fmt(values) -> str:
    return " ".join(f"{v:.10g}" for v in np.asarray(values).ravel())


# ---------------------------------------------------------------------------------------------
# one writer per format


def write_tum(root: Path, gt: GroundTruth, by_name: bool = False, masks: bool = False) -> Written:
    """TUM RGB-D layout; ``by_name`` names the folder after freiburg1 (needs fr1 K at 640x480)."""
    seq = root / ("rgbd_dataset_freiburg1_xyz" if by_name else "synthetic_seq")
    rng = np.random.default_rng(1)
    invalid = rng.random(gt.depth.shape) < 0.1
    rgb_lines, depth_lines, mask_lines = [], [], []
    gt_lines = [
        "# ground truth trajectory",
        "# file: 'rgbd_dataset_freiburg1_xyz.bag'",
        "# timestamp tx ty tz qx qy qz qw",
    ]
    for i, t in enumerate(gt.timestamps):
        name = f"{t:.6f}.png"
        imwrite_rgb(seq / "rgb" / name, gt.images[i])
        t_depth = t + 0.004  # depth frames are not exactly synchronised with colour
        imwrite_u16(seq / "depth" / f"{t_depth:.6f}.png", quantise(gt.depth[i], 5000.0, invalid[i]))
        rgb_lines.append(f"{t:.6f} rgb/{name}")
        depth_lines.append(f"{t_depth:.6f} depth/{t_depth:.6f}.png")
        for dt, shift in ((-0.01, 0.5), (0.0, 0.0), (0.01, -0.5)):  # 100 Hz poses; only dt = 0 is right
            T = gt.cam2world[i].copy()
            T[:3, 3] += shift
            q_xyzw = Rotation.from_matrix(T[:3, :3]).as_quat()  # scipy: (x, y, z, w) as TUM
            gt_lines.append(f"{t + dt:.6f} {fmt(T[:3, 3])} {fmt(q_xyzw)}")
        if masks:
            mask = (gt.depth[i] < 3.0).astype(np.uint8) * 255
            (seq / "mask").mkdir(exist_ok=True)
            assert cv2.imwrite(str(seq / "mask" / name), mask)
            mask_lines.append(f"{t:.6f} mask/{name}")
    # one colour frame 1 s later without depth: the reader drops it
    t_extra = gt.timestamps[-1] + 1.0
    imwrite_rgb(seq / "rgb" / f"{t_extra:.6f}.png", gt.images[-1])
    rgb_lines.append(f"{t_extra:.6f} rgb/{t_extra:.6f}.png")
    header = "# {} images\n# file: 'rgbd_dataset_freiburg1_xyz.bag'\n# timestamp filename\n"
    (seq / "rgb.txt").write_text(header.format("color") + "\n".join(rgb_lines) + "\n")
    (seq / "depth.txt").write_text(header.format("depth") + "\n".join(depth_lines) + "\n")
    (seq / "groundtruth.txt").write_text("\n".join(gt_lines) + "\n")
    if masks:
        (seq / "mask.txt").write_text(
            "# dynamic masks\n# timestamp filename\n" + "\n".join(mask_lines) + "\n"
        )
    if not by_name:
        K = gt.K[0]
        (seq / "intrinsics.txt").write_text(f"# fx fy cx cy\n{fmt([K[0, 0], K[1, 1], K[0, 2], K[1, 2]])}\n")
    return Written(seq, "tum", gt, point_tol=1.0 / 5000 + 1e-4, invalid=invalid)


def write_7scenes(root: Path, gt: GroundTruth, rendered: bool = True) -> Written:
    seq = root / "chess" / "seq-01"
    seq.mkdir(parents=True)
    invalid = np.random.default_rng(2).random(gt.depth.shape) < 0.1
    for i in range(len(gt.images)):
        stem = seq / f"frame-{i:06d}"
        imwrite_rgb(Path(f"{stem}.color.png"), gt.images[i])
        raw = quantise(gt.depth[i], 1000.0, invalid[i], code=65535)  # mm, 65535 = no depth
        imwrite_u16(Path(f"{stem}.depth.png"), raw)
        if rendered:
            imwrite_u16(Path(f"{stem}.depth.proj.png"), raw)
        Path(f"{stem}.pose.txt").write_text(
            "\n".join("\t".join(f"{v:.9e}" for v in row) for row in gt.cam2world[i]) + "\n"
        )
    return Written(seq, "7scenes", gt, point_tol=1e-3 + 1e-4, invalid=invalid)


def write_scannet(root: Path, gt: GroundTruth) -> Written:
    """Colour at twice the depth size (as ScanNet's 1296x968 vs 640x480), one -inf pose frame."""
    scene = root / "scene0000_00"
    invalid = np.random.default_rng(3).random(gt.depth.shape) < 0.1
    (scene / "pose").mkdir(parents=True)
    (scene / "intrinsic").mkdir()
    ids = [0, 2, 3][: len(gt.images)]  # numeric names; frame 1 has an invalid pose
    for i, fid in zip(range(len(gt.images)), ids, strict=True):
        imwrite_rgb(scene / "color" / f"{fid}.jpg", upsample2(gt.images[i]))
        imwrite_u16(scene / "depth" / f"{fid}.png", quantise(gt.depth[i], 1000.0, invalid[i]))
        np.savetxt(scene / "pose" / f"{fid}.txt", gt.cam2world[i], fmt="%.9f")
    imwrite_rgb(scene / "color" / "1.jpg", upsample2(gt.images[0]))
    imwrite_u16(scene / "depth" / "1.png", quantise(gt.depth[0], 1000.0))
    (scene / "pose" / "1.txt").write_text("\n".join(["-inf -inf -inf -inf"] * 4) + "\n")
    for name, K in (("intrinsic_color.txt", K_upsampled2(gt.K[0])), ("intrinsic_depth.txt", gt.K[0])):
        K4 = np.eye(4)
        K4[:3, :3] = K
        np.savetxt(scene / "intrinsic" / name, K4, fmt="%f")
    return Written(scene, "scannet", gt, point_tol=1e-3 + 1e-4, image_exact=False, invalid=invalid)


TAG = np.float32(202021.25)


def write_sintel(root: Path, gt: GroundTruth) -> Written:
    split = root / "training"
    H, W = gt.depth.shape[1:]
    for i in range(len(gt.images)):
        name = f"frame_{i + 1:04d}"
        imwrite_rgb(split / "final" / "alley_1" / f"{name}.png", gt.images[i])
        (split / "depth" / "alley_1").mkdir(parents=True, exist_ok=True)
        with open(split / "depth" / "alley_1" / f"{name}.dpt", "wb") as f:
            f.write(TAG.tobytes() + np.int32(W).tobytes() + np.int32(H).tobytes())
            f.write(gt.depth[i].astype("<f4").tobytes())
        (split / "camdata_left" / "alley_1").mkdir(parents=True, exist_ok=True)
        world2cam = np.linalg.inv(gt.cam2world[i])[:3, :4]
        with open(split / "camdata_left" / "alley_1" / f"{name}.cam", "wb") as f:
            f.write(TAG.tobytes() + gt.K[i].astype("<f8").tobytes() + world2cam.astype("<f8").tobytes())
    return Written(split / "final" / "alley_1", "sintel", gt, point_tol=1e-4)


def write_kitti_depth(root: Path, gt: GroundTruth) -> Written:
    """Raw drive + annotated depth merged; frame 0 has no ground-truth depth (as in the benchmark)."""
    date = root / "2011_09_26"
    drive = date / "2011_09_26_drive_0001_sync"
    K = gt.K[0]
    P2 = np.hstack([K, K @ np.array([[0.06], [0.001], [0.002]])])  # rectified cam 2: K [I | t]
    lines = ["calib_time: 09-Jan-2012 13:57:47", "corner_dist: 9.950000e-02"]
    for cam in ("00", "01", "02", "03"):
        P = P2 if cam == "02" else np.hstack([K, np.zeros((3, 1))])
        lines += [
            f"S_{cam}: 1.392000e+03 5.120000e+02",
            f"K_{cam}: {fmt(np.eye(3))}",
            f"P_rect_{cam}: {fmt(P)}",
        ]
    date.mkdir(parents=True)
    (date / "calib_cam_to_cam.txt").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(4)
    invalid = rng.random(gt.depth.shape) > 0.3  # LiDAR: sparse
    stamps = []
    for i in range(len(gt.images)):
        imwrite_rgb(drive / "image_02" / "data" / f"{i:010d}.png", gt.images[i])
        stamps.append(f"2011-09-26 13:02:{25 + i * 0.103:012.9f}")  # e.g. 13:02:25.103000000
        if i > 0:
            path = drive / "proj_depth" / "groundtruth" / "image_02" / f"{i:010d}.png"
            imwrite_u16(path, quantise(gt.depth[i], 256.0, invalid[i]))
    (drive / "image_02" / "timestamps.txt").write_text("\n".join(stamps) + "\n")
    sub = GroundTruth(gt.images[1:], gt.depth[1:], gt.K[1:], gt.cam2world[1:], gt.timestamps[1:])
    return Written(drive, "kitti_depth", sub, point_tol=1 / 256 + 1e-4, invalid=invalid[1:])


def write_kitti_odometry(root: Path, gt: GroundTruth) -> Written:
    """Poses of camera 0; the colour camera 2 sits at t2 = K^-1 P2[:, 3] from it."""
    seq = root / "dataset" / "sequences" / "05"
    K = gt.K[0]
    t2 = np.array([0.0597, -0.0004, 0.0027])
    Ps = {c: np.hstack([K, K @ (t2 if c == 2 else np.zeros(3))[:, None]]) for c in range(4)}
    seq.mkdir(parents=True)
    (seq / "calib.txt").write_text(
        "".join(f"P{c}: {fmt(Ps[c])}\n" for c in range(4)) + f"Tr: {fmt(np.eye(4)[:3])}\n"
    )
    (seq / "times.txt").write_text("".join(f"{i * 0.1036:.6e}\n" for i in range(len(gt.images))))
    cam2_in_cam0 = np.eye(4)
    cam2_in_cam0[:3, 3] = -t2  # X_2 = X_0 + t2, so camera 2's centre is at -t2 in camera 0
    lines = []
    for i in range(len(gt.images)):
        imwrite_rgb(seq / "image_2" / f"{i:06d}.png", gt.images[i])
        cam0 = gt.cam2world[i] @ np.linalg.inv(cam2_in_cam0)
        lines.append(fmt(cam0[:3, :4]))
    (root / "dataset" / "poses").mkdir(parents=True)
    (root / "dataset" / "poses" / "05.txt").write_text("\n".join(lines) + "\n")
    return Written(seq, "kitti_odometry", gt, point_tol=0.0)


def write_tartanair(root: Path, gt: GroundTruth) -> Written:
    """NED body poses: body x = camera forward (OpenCV z), y = right (x), z = down (y)."""
    traj = root / "abandonedfactory" / "Easy" / "P000"
    body_in_cv = np.eye(4)
    body_in_cv[:3, :3] = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]])  # columns: body x, y, z in OpenCV axes
    lines = []
    for i in range(len(gt.images)):
        imwrite_rgb(traj / "image_left" / f"{i:06d}_left.png", gt.images[i])
        (traj / "depth_left").mkdir(parents=True, exist_ok=True)
        np.save(traj / "depth_left" / f"{i:06d}_left_depth.npy", gt.depth[i].astype(np.float32))
        T = gt.cam2world[i] @ body_in_cv
        lines.append(f"{fmt(T[:3, 3])} {fmt(Rotation.from_matrix(T[:3, :3]).as_quat())}")
    (traj / "pose_left.txt").write_text("\n".join(lines) + "\n")
    return Written(traj, "tartanair", gt, point_tol=1e-4)


def pytorch3d_viewpoint(K: np.ndarray, cam2world: np.ndarray, width: int, height: int) -> dict:
    """OpenCV camera -> PyTorch3D NDC camera (ndc_isotropic), as CO3D stores it."""
    world2cam = np.linalg.inv(cam2world)
    flip = np.diag([-1.0, -1.0, 1.0])  # OpenCV (right, down, fwd) -> PyTorch3D (left, up, fwd)
    R_col = flip @ world2cam[:3, :3]  # column convention X_p3d = R_col X_w + T
    s = min(width, height) / 2.0
    return {
        "R": R_col.T.tolist(),  # PyTorch3D row-vector convention: X_p3d = X_w @ R + T
        "T": (flip @ world2cam[:3, 3]).tolist(),
        "focal_length": [K[0, 0] / s, K[1, 1] / s],
        "principal_point": [(width / 2 - 0.5 - K[0, 2]) / s, (height / 2 - 0.5 - K[1, 2]) / s],
        "intrinsics_format": "ndc_isotropic",
    }


def _write_jgz(path: Path, annotations: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf8") as f:
        json.dump(annotations, f)


def _annotated_frames(
    base: Path, prefix: str, gt: GroundTruth, scale: float, ext: str, **extra
) -> list[dict]:
    """Write images / float16 depth / depth masks under base/prefix; return their annotations."""
    W, H = gt.size
    out = []
    for i in range(len(gt.images)):
        image_rel = f"{prefix}/images/frame{i + 1:06d}{ext}"
        imwrite_rgb(base / image_rel, gt.images[i])
        depth_rel = f"{prefix}/depths/frame{i + 1:06d}{ext}.geometric.png"
        half = (gt.depth[i] / scale).astype(np.float16)  # float16 bits stored in a uint16 PNG
        imwrite_u16(base / depth_rel, half.view(np.uint16))
        mask_rel = f"{prefix}/depth_masks/frame{i + 1:06d}.png"
        (base / mask_rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(base / mask_rel), np.full((H, W), 255, np.uint8))
        out.append(
            {
                "sequence_name": prefix.split("/")[-1],
                "frame_number": i,
                "frame_timestamp": float(gt.timestamps[i] - gt.timestamps[0]),
                "image": {"path": image_rel, "size": [H, W]},
                "depth": {"path": depth_rel, "scale_adjustment": scale, "mask_path": mask_rel},
                "viewpoint": pytorch3d_viewpoint(gt.K[i], gt.cam2world[i], W, H),
                **extra,
            }
        )
    return out


def write_co3d(root: Path, gt: GroundTruth, other: GroundTruth) -> Written:
    """Category folder with two sequences in one frame_annotations.jgz; paths from the dataset root."""
    frames = _annotated_frames(root, "apple/110_13051_23361", gt, 1.7, ".jpg")
    frames += _annotated_frames(root, "apple/189_20393_38136", other, 1.0, ".jpg")
    _write_jgz(root / "apple" / "frame_annotations.jgz", frames[::-1])  # order must not matter
    tol = 1.7 * 2.0**-11 * float(gt.depth.max()) * 1.5 + 1e-4  # float16 rounding along the ray
    return Written(root / "apple" / "110_13051_23361", "co3d", gt, point_tol=tol, image_exact=False)


def write_dynamic_replica(root: Path, gt: GroundTruth, right: GroundTruth) -> Written:
    """Split folder; left and right cameras share a sequence_name; paths from the split folder."""
    split = root / "train"
    frames = _annotated_frames(split, "009850-3_obj_source_left", gt, 1.0, ".png", camera_name="left")
    frames += _annotated_frames(split, "009850-3_obj_source_right", right, 1.0, ".png", camera_name="right")
    for f in frames:
        f["sequence_name"] = "009850-3_obj_source"
    _write_jgz(split / "frame_annotations_train.jgz", frames)
    tol = 2.0**-11 * float(gt.depth.max()) * 1.5 + 1e-4
    return Written(split / "009850-3_obj_source_left", "dynamic_replica", gt, point_tol=tol)


def write_pointodyssey(root: Path, gt: GroundTruth) -> Written:
    seq = root / "r4_new_f"
    for i in range(len(gt.images)):
        imwrite_rgb(seq / "rgbs" / f"rgb_{i:05d}.jpg", gt.images[i])
        imwrite_u16(seq / "depths" / f"depth_{i:05d}.png", quantise(gt.depth[i], 65535.0 / 1000.0))
    n = len(gt.images)
    np.savez(
        seq / "anno.npz",
        intrinsics=gt.K.astype(np.float32),
        extrinsics=np.linalg.inv(gt.cam2world),
        trajs_2d=np.zeros((n, 4, 2), np.float32),
        trajs_3d=np.zeros((n, 4, 3), np.float32),
        valids=np.ones((n, 4), bool),
        visibs=np.ones((n, 4), bool),
    )
    return Written(seq, "pointodyssey", gt, point_tol=1000.0 / 65535 + 1e-3, image_exact=False)


def write_vkitti2(root: Path, gt: GroundTruth) -> Written:
    base = root / "Scene01" / "clone"
    invalid = np.random.default_rng(5).random(gt.depth.shape) < 0.1
    intr = ["frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"]
    extr = ["frame cameraID r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 0 0 0 1"]
    for i in range(len(gt.images)):
        imwrite_rgb(base / "frames" / "rgb" / "Camera_0" / f"rgb_{i:05d}.jpg", gt.images[i])
        raw = quantise(gt.depth[i], 100.0, invalid[i], code=65535)  # cm, 65535 = sky
        imwrite_u16(base / "frames" / "depth" / "Camera_0" / f"depth_{i:05d}.png", raw)
        K = gt.K[i]
        for cam, shift in ((0, 0.0), (1, 0.532725)):  # camera 1: the right camera, 0.53 m to the right
            world2cam = np.linalg.inv(gt.cam2world[i])
            world2cam[0, 3] -= shift
            intr.append(f"{i} {cam} {fmt([K[0, 0], K[1, 1], K[0, 2], K[1, 2]])}")
            extr.append(f"{i} {cam} {fmt(world2cam)}")
    (base / "intrinsic.txt").write_text("\n".join(intr) + "\n")
    (base / "extrinsic.txt").write_text("\n".join(extr) + "\n")
    return Written(base, "vkitti2", gt, point_tol=0.01 + 1e-4, image_exact=False, invalid=invalid)


def write_scannetpp_iphone(root: Path, gt: GroundTruth) -> Written:
    """COLMAP text model for 2x-size colour; depth (mm) at 1x. COLMAP pixel centres sit at +0.5."""
    base = root / "0a5c013435" / "iphone"
    K2 = K_upsampled2(gt.K[0])
    W2, H2 = 2 * gt.size[0], 2 * gt.size[1]
    (base / "colmap").mkdir(parents=True)
    params = fmt([K2[0, 0], K2[1, 1], K2[0, 2] + 0.5, K2[1, 2] + 0.5])
    (base / "colmap" / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        f"# Number of cameras: 1\n1 PINHOLE {W2} {H2} {params}\n"
    )
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {len(gt.images)}",
    ]
    for i in reversed(range(len(gt.images))):  # file order is not frame order
        name = f"frame_{i * 10:06d}.jpg"
        imwrite_rgb(base / "rgb" / name, upsample2(gt.images[i]))
        imwrite_u16(base / "depth" / name.replace(".jpg", ".png"), quantise(gt.depth[i], 1000.0))
        w2c = np.linalg.inv(gt.cam2world[i])
        q_xyzw = Rotation.from_matrix(w2c[:3, :3]).as_quat()
        q_wxyz = q_xyzw[[3, 0, 1, 2]]
        lines.append(f"{i + 1} {fmt(q_wxyz)} {fmt(w2c[:3, 3])} 1 {name}")
        lines.append("" if i % 2 else "12.5 30.25 -1 40.0 41.0 7")  # POINTS2D lines, some empty
    (base / "colmap" / "images.txt").write_text("\n".join(lines) + "\n")
    (base / "colmap" / "points3D.txt").write_text("# 3D point list\n")
    return Written(base, "scannetpp", gt, point_tol=1e-3 + 1e-4, image_exact=False)
