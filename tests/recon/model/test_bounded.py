"""log_tail_clamp against its closed form; a saturated depth head keeps a map and a gradient."""

import math

import torch

from recon.model.bounded import log_tail_clamp
from recon.model.heads import DenseHead


def _closed_form(v: float, lo: float, hi: float) -> float:
    if v > hi:
        return min(hi + math.log1p(v - hi), 80.0)
    if v < lo:
        return max(lo - math.log1p(lo - v), -80.0)
    return v


def test_values_and_slopes_match_the_closed_form():
    values = [-1e35, -1e5, -12.5, -12.0, -3.0, 0.0, 11.99, 12.0, 12.5, 7e4, 1e35]
    x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    y = log_tail_clamp(x, -12.0, 12.0)
    expected = torch.tensor([_closed_form(v, -12.0, 12.0) for v in values], dtype=torch.float64)
    torch.testing.assert_close(y, expected, rtol=1e-15, atol=0)
    y.sum().backward()
    slope = [0.0 if abs(_closed_form(v, -12, 12)) == 80 else 1.0 / (1.0 + max(v - 12, -12 - v, 0.0))
             for v in values]
    torch.testing.assert_close(x.grad, torch.tensor(slope, dtype=torch.float64), rtol=1e-12, atol=0)


def test_inside_the_range_it_is_the_plain_clamp_bit_for_bit():
    x = torch.linspace(-11.0, 19.9, 301, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    log_tail_clamp(x, hi=20.0).exp().sum().backward()
    x_ref.clamp(max=20.0).exp().sum().backward()
    assert torch.equal(x.grad, x_ref.grad)
    assert torch.equal(log_tail_clamp(x.detach(), hi=20.0), x.detach().clamp(max=20.0))


def test_strictly_increasing_and_finite_after_exp():
    x = torch.cat([torch.linspace(-1e6, 1e6, 2001), torch.logspace(0, 20, 50)]).sort().values
    y = log_tail_clamp(x, -12.0, 12.0)
    assert bool((y.diff() > 0).all())
    assert bool(torch.isfinite(y.exp()).all())


def test_saturated_dense_head_keeps_a_map_and_a_gradient():
    """The ttt_lact failure: log-depth far beyond the bound; the plain clamp gave a flat map."""
    torch.manual_seed(0)
    head = DenseHead(dim=16, features=16, num_levels=1, patch_size=4, num_special=0, grid=(2, 3))
    with torch.no_grad():
        head.out[-1].bias[0] = 1e3          # every pixel's log-depth >> 12
    tokens, images = [torch.randn(2, 6, 16)], torch.randn(2, 3, 8, 12)
    depth, _ = head(tokens, images)
    assert bool((depth > torch.exp(torch.tensor(12.0))).all())   # all beyond the bound
    assert float(depth.detach().std()) > 0                   # the plain clamp made this exactly 0
    (depth.log() - 1.0).abs().mean().backward()               # targets far below: pull down
    assert float(head.out[-1].bias.grad[0]) > 0
