"""clamp_keep_grad: the plain clamp's value, the identity's gradient; a saturated depth head learns."""

import torch

from recon.model.bounded import clamp_keep_grad
from recon.model.heads import DenseHead


def test_value_is_the_plain_clamp_and_gradient_is_identity():
    x = torch.tensor([-1e5, -12.5, -3.0, 0.0, 11.99, 12.0, 7e4], dtype=torch.float64, requires_grad=True)
    y = clamp_keep_grad(x, -12.0, 12.0)
    assert torch.equal(y, x.detach().clamp(-12.0, 12.0))
    w = torch.arange(1.0, 8.0, dtype=torch.float64)
    (y * w).sum().backward()
    assert torch.equal(x.grad, w)          # d/dx sum(w * y) with dy/dx := 1 everywhere


def test_one_sided_bound_and_inside_range_matches_plain_clamp_gradient():
    x = torch.linspace(-5.0, 19.0, 25, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    clamp_keep_grad(x, hi=20.0).exp().sum().backward()
    x_ref.clamp(max=20.0).exp().sum().backward()   # nothing binds: same gradient as the clamp
    assert torch.equal(x.grad, x_ref.grad)


def test_saturated_dense_head_gets_a_depth_gradient():
    """The ttt_lact failure: log-depth far beyond the bound; the plain clamp gave zero gradient."""
    torch.manual_seed(0)
    head = DenseHead(dim=16, features=16, num_levels=1, patch_size=4, num_special=0, grid=(2, 3))
    with torch.no_grad():
        head.out[-1].bias[0] = 1e3          # every pixel's log-depth >> 12
    tokens = [torch.randn(2, 6, 16)]
    depth, _ = head(tokens, torch.randn(2, 3, 8, 12))
    assert torch.equal(depth, torch.full_like(depth, torch.exp(torch.tensor(12.0)).item()))
    target = torch.rand_like(depth) + 0.5
    (depth.log() - target.log()).abs().mean().backward()
    g = head.out[-1].bias.grad[0]
    assert g > 0                             # pulls the log-depth down, toward the targets
