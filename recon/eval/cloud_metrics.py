"""Point-cloud metrics: accuracy, completeness, Chamfer-L1, normal consistency, precision / recall / F.

Both clouds are [N, 3] in one frame and unit (metres for ground truth; align a prediction first,
e.g. with the Sim(3) of the trajectory alignment). Nearest neighbours come from
``scipy.spatial.cKDTree``; normals from open3d's ``estimate_normals`` (k nearest neighbours) unless
given; an optional open3d point-to-point ICP refines the prediction onto the ground truth first.

Definitions (as in the 3D reconstruction literature, e.g. 7-Scenes / NRGBD point-map evaluation):
accuracy = distance of each predicted point to the nearest gt point; completeness = distance of
each gt point to the nearest predicted point; Chamfer-L1 = (mean accuracy + mean completeness) / 2;
normal consistency = mean |n_pred . n_gt| over both nearest-neighbour directions, averaged;
precision / recall = fraction of accuracy / completeness distances below the threshold;
F-score = 2 P R / (P + R).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import open3d as o3d
import torch
from scipy.spatial import cKDTree

from recon.errors import InputError, ShapeError


@dataclass
class CloudMetrics:
    """Point-cloud errors (units of the inputs).

    Attributes:
        accuracy_mean, accuracy_median, completeness_mean, completeness_median, chamfer_l1,
        normal_consistency (in [0, 1], 1 = parallel normals), precision, recall, fscore,
        threshold, num_pred, num_gt, icp_transform (4x4 applied to the prediction, identity
        without ICP), icp_fitness (fraction of inlier correspondences; NaN without ICP).
    """

    accuracy_mean: float
    accuracy_median: float
    completeness_mean: float
    completeness_median: float
    chamfer_l1: float
    normal_consistency: float
    precision: float
    recall: float
    fscore: float
    threshold: float
    num_pred: int
    num_gt: int
    icp_transform: list[list[float]]
    icp_fitness: float

    def to_dict(self) -> dict:
        return asdict(self)


def _as_cloud(x, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ShapeError(f"{name}: expected points [N, 3], got {list(a.shape)}")
    if len(a) == 0:
        raise InputError(f"{name}: empty point cloud, expected at least one point")
    if not np.isfinite(a).all():
        raise InputError(f"{name}: {int((~np.isfinite(a)).any(axis=1).sum())} points with non-finite values")
    return a


def _o3d_cloud(points: np.ndarray) -> o3d.geometry.PointCloud:
    return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))


def estimate_normals(points, knn: int = 30) -> np.ndarray:
    """Unit normals [N, 3] from a local plane fit over the ``knn`` nearest neighbours (open3d).

    The sign is arbitrary (normal consistency uses |dot|).
    """
    cloud = _o3d_cloud(_as_cloud(points, "points"))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(knn=knn))
    return np.asarray(cloud.normals, dtype=np.float64)


def icp_refine(pred, gt, max_distance: float, init=None) -> tuple[np.ndarray, float]:
    """Rigid point-to-point ICP (open3d) moving ``pred`` onto ``gt``.

    Args:
        pred: [N, 3]; gt: [M, 3].
        max_distance: largest correspondence distance.
        init: initial 4x4 transform (identity when None).

    Returns:
        (4x4 transform to apply to pred, fitness = inlier fraction).
    """
    if not max_distance > 0:
        raise InputError(f"icp max distance: expected > 0, got {max_distance}")
    init = np.eye(4) if init is None else np.asarray(init, dtype=np.float64)
    result = o3d.pipelines.registration.registration_icp(
        _o3d_cloud(_as_cloud(pred, "pred")),
        _o3d_cloud(_as_cloud(gt, "gt")),
        max_distance,
        init,
        o3d.pipelines.registration.TransformationEstimationPointToPoint(),
    )
    return np.asarray(result.transformation, dtype=np.float64), float(result.fitness)


def cloud_metrics(
    pred,
    gt,
    threshold: float = 0.05,
    pred_normals=None,
    gt_normals=None,
    normal_knn: int = 30,
    icp_max_distance: float | None = None,
) -> CloudMetrics:
    """Accuracy, completeness, Chamfer, normal consistency and F-score of a predicted cloud.

    Args:
        pred: predicted points [N, 3] (numpy or torch), in gt's frame and unit.
        gt: ground-truth points [M, 3].
        threshold: distance for precision / recall / F-score.
        pred_normals, gt_normals: optional normals [N, 3] / [M, 3]; estimated with open3d when None.
        normal_knn: neighbours for normal estimation.
        icp_max_distance: when given, refine pred onto gt by point-to-point ICP with this
            correspondence distance before measuring.

    Returns:
        :class:`CloudMetrics`.
    """
    pred, gt = _as_cloud(pred, "pred"), _as_cloud(gt, "gt")
    if not threshold > 0:
        raise InputError(f"threshold: expected > 0, got {threshold}")
    transform, fitness = np.eye(4), float("nan")
    if icp_max_distance is not None:
        transform, fitness = icp_refine(pred, gt, icp_max_distance)
        pred = pred @ transform[:3, :3].T + transform[:3, 3]
    if pred_normals is None:
        n_pred = estimate_normals(pred, normal_knn)
    else:
        n_pred = _as_cloud(pred_normals, "pred_normals")
    n_gt = estimate_normals(gt, normal_knn) if gt_normals is None else _as_cloud(gt_normals, "gt_normals")
    if len(n_pred) != len(pred) or len(n_gt) != len(gt):
        raise ShapeError(
            f"normals: expected one per point ({len(pred)} pred, {len(gt)} gt), "
            f"got {len(n_pred)} and {len(n_gt)}"
        )
    if icp_max_distance is not None and pred_normals is not None:
        n_pred = n_pred @ transform[:3, :3].T  # normals rotate with the points
    n_pred = n_pred / np.linalg.norm(n_pred, axis=1, keepdims=True).clip(1e-12)
    n_gt = n_gt / np.linalg.norm(n_gt, axis=1, keepdims=True).clip(1e-12)

    acc, idx_gt = cKDTree(gt).query(pred)  # pred -> nearest gt
    comp, idx_pred = cKDTree(pred).query(gt)  # gt -> nearest pred
    nc_acc = np.abs((n_pred * n_gt[idx_gt]).sum(axis=1)).mean()
    nc_comp = np.abs((n_gt * n_pred[idx_pred]).sum(axis=1)).mean()
    precision = float((acc < threshold).mean())
    recall = float((comp < threshold).mean())
    fscore = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return CloudMetrics(
        accuracy_mean=float(acc.mean()),
        accuracy_median=float(np.median(acc)),
        completeness_mean=float(comp.mean()),
        completeness_median=float(np.median(comp)),
        chamfer_l1=float(0.5 * (acc.mean() + comp.mean())),
        normal_consistency=float(0.5 * (nc_acc + nc_comp)),
        precision=precision,
        recall=recall,
        fscore=float(fscore),
        threshold=float(threshold),
        num_pred=len(pred),
        num_gt=len(gt),
        icp_transform=transform.tolist(),
        icp_fitness=fitness,
    )
