"""Umeyama Sim(3)/SE(3) alignment: exact recovery, evo cross-check, weights, reflection, gradcheck."""

import numpy as np
import pytest
import torch
from evo.core.geometry import umeyama_alignment
from scipy.spatial.transform import Rotation

from recon.errors import ShapeError
from recon.geometry import (
    apply_sim3,
    apply_sim3_to_poses,
    pose_from_Rt,
    sim3_to_matrix,
    transform_points,
    umeyama_sim3,
)


def random_sim3(B, seed=0):
    gen = torch.Generator().manual_seed(seed)
    R = torch.as_tensor(Rotation.random(B, random_state=seed).as_matrix())
    s = torch.rand(B, generator=gen, dtype=torch.float64) * 3 + 0.2
    t = torch.randn(B, 3, generator=gen, dtype=torch.float64) * 5
    return s, R, t


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)], ids=["fp32", "fp64"])
def test_recovers_exact_similarity(dtype, tol):
    s, R, t = random_sim3(4)
    src = torch.randn(4, 30, 3, dtype=torch.float64)
    dst = apply_sim3(s, R, t, src)
    s2, R2, t2 = umeyama_sim3(src.to(dtype), dst.to(dtype))
    assert s2.shape == (4,) and R2.shape == (4, 3, 3) and t2.shape == (4, 3) and s2.dtype == dtype
    torch.testing.assert_close(s2.double(), s, atol=tol, rtol=tol)
    torch.testing.assert_close(R2.double(), R, atol=tol, rtol=tol)
    torch.testing.assert_close(t2.double(), t, atol=tol * 10, rtol=tol)


@pytest.mark.parametrize("with_scale", [True, False], ids=["sim3", "se3"])
def test_matches_evo_on_noisy_points(with_scale):
    s, R, t = random_sim3(3, seed=5)
    src = torch.randn(3, 50, 3, dtype=torch.float64)
    dst = apply_sim3(s, R, t, src) + 0.1 * torch.randn(3, 50, 3, dtype=torch.float64)
    s2, R2, t2 = umeyama_sim3(src, dst, with_scale=with_scale)
    for b in range(3):
        r_evo, t_evo, c_evo = umeyama_alignment(src[b].numpy().T, dst[b].numpy().T, with_scale)  # 3xN
        np.testing.assert_allclose(R2[b].numpy(), r_evo, atol=1e-10)
        np.testing.assert_allclose(t2[b].numpy(), t_evo, atol=1e-10)
        np.testing.assert_allclose(s2[b].item(), c_evo, rtol=1e-10)


def test_reflection_is_corrected_like_evo():
    # dst is a mirror image of src: the best *rotation* must still have det +1
    src = torch.randn(1, 40, 3, dtype=torch.float64)
    dst = src * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    _, R, _ = umeyama_sim3(src, dst)
    assert torch.linalg.det(R).item() == pytest.approx(1.0, abs=1e-12)
    r_evo, _, _ = umeyama_alignment(src[0].numpy().T, dst[0].numpy().T, True)
    np.testing.assert_allclose(R[0].numpy(), r_evo, atol=1e-10)


def test_weights_equal_subset_and_repetition():
    s, R, t = random_sim3(1, seed=2)
    src = torch.randn(1, 40, 3, dtype=torch.float64)
    dst = apply_sim3(s, R, t, src) + 0.2 * torch.randn(1, 40, 3, dtype=torch.float64)
    dst[:, 30:] += 100.0  # outliers, weighted out
    w = torch.zeros(1, 40, dtype=torch.float64)
    w[:, :30] = 1.0
    w[:, :5] = 2.0  # weight 2 == the point counted twice
    got = umeyama_sim3(src, dst, weights=w)
    rep_src = torch.cat((src[:, :30], src[:, :5]), dim=1)
    rep_dst = torch.cat((dst[:, :30], dst[:, :5]), dim=1)
    ref = umeyama_sim3(rep_src, rep_dst)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b)


def test_sim3_matrix_and_pose_alignment_agree():
    s, R, t = random_sim3(2, seed=3)
    pts = torch.randn(2, 7, 3, dtype=torch.float64)
    torch.testing.assert_close(transform_points(sim3_to_matrix(s, R, t), pts), apply_sim3(s, R, t, pts))
    Rc = torch.as_tensor(Rotation.random(10, random_state=4).as_matrix()).reshape(2, 5, 3, 3)
    poses = pose_from_Rt(Rc, torch.randn(2, 5, 3, dtype=torch.float64))
    moved = apply_sim3_to_poses(s, R, t, poses)
    # a camera-frame point p maps to world w = T p; after alignment the moved camera sees the same
    # direction and the world point s R w + t lies at distance s * |p| along the moved ray
    p = torch.randn(2, 5, 1, 3, dtype=torch.float64)
    w = transform_points(poses, p)
    w_sim = apply_sim3(s, R, t, w.reshape(2, 5, 3)).reshape(2, 5, 1, 3)
    torch.testing.assert_close(transform_points(moved, s[:, None, None, None] * p), w_sim)
    rot = moved[..., :3, :3]
    eye = torch.eye(3, dtype=torch.float64).expand(2, 5, 3, 3)
    torch.testing.assert_close(rot.transpose(-1, -2) @ rot, eye)


def test_gradcheck_umeyama():
    src = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    dst = (src.detach() * 1.5 + 0.3 * torch.randn(2, 6, 3, dtype=torch.float64)).requires_grad_()
    w = (torch.rand(2, 6, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: umeyama_sim3(a, b, c), (src, dst, w))


@pytest.mark.parametrize(
    "src, dst, weights, match",
    [
        pytest.param(torch.randn(2, 5, 3), torch.randn(2, 6, 3), None, r"dst: expected shape \[2, 5, 3\]",
                     id="length-mismatch"),
        pytest.param(torch.randn(5, 3), torch.randn(5, 3), None, r"src: expected shape \[B, N, 3\]",
                     id="unbatched"),
        pytest.param(torch.randn(1, 2, 3), torch.randn(1, 2, 3), None, ">= 3 points", id="two-points"),
        pytest.param(torch.ones(1, 5, 3), torch.randn(1, 5, 3), None, "degenerate source", id="coincident"),
        pytest.param(torch.randn(1, 5, 3), torch.randn(1, 5, 3), -torch.ones(1, 5), ">= 0", id="negative-w"),
        pytest.param(torch.full((1, 5, 3), float("nan")), torch.randn(1, 5, 3), None, "non-finite", id="nan"),
    ],
)
def test_errors(src, dst, weights, match):
    with pytest.raises(ShapeError, match=match):
        umeyama_sim3(src, dst, weights)
