"""The branch network, the positive alpha metric and the triplet loss (DESIGN.md section 2)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_siamforensic.core.config import ModelConfig
from napari_siamforensic.core.model import SiameseNet, same_logit, standardise, triplet_loss

from .conftest import SMALL_MODEL


def make_net(config: ModelConfig | None = None, seed: int = 0, device: str = "cpu") -> SiameseNet:
    net = SiameseNet(config or ModelConfig())
    net.reset_parameters(torch.Generator().manual_seed(seed))
    return net.to(device)


@pytest.fixture(scope="module")
def net(device):
    return make_net(device=device)


@pytest.mark.parametrize("batch", [2, 5])
def test_branch_maps_128px_gray_to_128_floats(net, device, batch):
    x = torch.rand(batch, 1, 128, 128, generator=torch.Generator().manual_seed(batch)).to(device)
    net.train()
    out_train = net(x)
    net.eval()
    with torch.no_grad():
        out_eval = net(x)
    for out in (out_train, out_eval):
        assert out.shape == (batch, 128)
        assert out.dtype == torch.float32
        assert out.device.type == torch.device(device).type
        assert torch.isfinite(out).all()
    # different inputs, different embeddings
    assert not torch.allclose(out_eval[0], out_eval[1])


def test_paper_architecture(net):
    """4 blocks of 16/32/64/128 channels, 8x8x128 -> 8192 -> 1024 -> BN -> 128."""
    blocks = net.branch.blocks
    assert [b.conv1.out_channels for b in blocks] == [16, 32, 64, 128]
    for b in blocks:
        assert b.conv1.kernel_size == b.conv2.kernel_size == (3, 3)
        assert b.conv1.bias is None and b.conv2.bias is not None
        assert isinstance(b.norm, torch.nn.BatchNorm2d)
    assert net.branch.fc1.in_features == 8 * 8 * 128
    assert net.branch.fc1.out_features == 1024
    assert net.branch.fc2.out_features == 128
    assert net.alpha.shape == (128,)


def test_eval_embedding_does_not_depend_on_the_batch(net, device):
    x = torch.rand(4, 1, 128, 128, generator=torch.Generator().manual_seed(3)).to(device)
    net.eval()
    with torch.no_grad():
        together = net(x)
        alone = torch.cat([net(x[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_feature_maps_shapes_and_paper_channel_count(net, device):
    x = torch.rand(2, 1, 128, 64, generator=torch.Generator().manual_seed(1)).to(device)
    net.eval()
    with torch.no_grad():
        maps = net.branch.feature_maps(x)
        last3 = net.branch.feature_maps(x, blocks=[1, 2, 3])
        first = net.branch.feature_maps(x, blocks=[0])
    assert [tuple(m.shape) for m in maps] == [(2, 16, 128, 64), (2, 32, 64, 32), (2, 64, 32, 16), (2, 128, 16, 8)]
    assert sum(m.shape[1] for m in last3) == 224     # the paper's 32 + 64 + 128 per-pixel features
    assert len(first) == 1 and first[0].shape == (2, 16, 128, 64)
    for a, b in zip(maps[1:], last3):
        torch.testing.assert_close(a, b)


def test_feature_maps_are_the_maps_forward_pools(net, device):
    """The last feature map, pooled and passed through the head, gives forward's embedding."""
    x = torch.rand(3, 1, 128, 128, generator=torch.Generator().manual_seed(2)).to(device)
    net.eval()
    with torch.no_grad():
        last = net.branch.feature_maps(x, blocks=[3])[0]
        pooled = torch.nn.functional.max_pool2d(last, 2)
        br = net.branch
        emb = br.fc2(br.fc_norm(br.fc1(br.head_norm(pooled).flatten(1))))
        torch.testing.assert_close(emb, net(x), rtol=1e-4, atol=1e-5)


def test_standardise_gives_zero_mean_unit_std_per_image():
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 50.0, 0.1]).view(3, 1, 1, 1)
    s = standardise(x)
    torch.testing.assert_close(s.flatten(1).mean(1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(s.flatten(1).std(1, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    assert torch.isfinite(standardise(torch.zeros(1, 1, 8, 8))).all()


def test_embedding_ignores_affine_intensity_changes(net, device):
    x = torch.rand(2, 1, 128, 128, generator=torch.Generator().manual_seed(4)).to(device)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(3.0 * x + 7.0), net(x), rtol=1e-3, atol=1e-4)


def test_reset_parameters_is_seeded_explicitly():
    a, b, c = make_net(SMALL_MODEL, 1), make_net(SMALL_MODEL, 1), make_net(SMALL_MODEL, 2)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.branch.fc1.weight, c.branch.fc1.weight)


# --------------------------------------------------------------------------- alpha and metric

def test_alpha_starts_at_alpha_init_and_is_positive():
    net = SiameseNet(ModelConfig(alpha_init=0.25))
    torch.testing.assert_close(net.alpha, torch.full((128,), 0.25))


def test_alpha_stays_positive_under_a_gradient_pushing_it_down(device):
    net = make_net(SMALL_MODEL, device=device)
    opt = torch.optim.Adam([net.alpha_raw], lr=1.0)    # Adam: steps of ~lr whatever the gradient
    for _ in range(30):
        opt.zero_grad()
        net.alpha.sum().backward()      # d/dalpha > 0: every step lowers alpha
        opt.step()
    assert net.alpha_raw.max() < -10       # the raw parameter went far below zero ...
    assert (net.alpha > 0).all()           # ... alpha did not
    with torch.no_grad():
        net.alpha_raw.fill_(-50.0)
    assert (net.alpha > 0).all()
    # and the metric stays a non-negative weighted L1
    e1, e2 = torch.randn(4, 32, device=device), torch.randn(4, 32, device=device)
    assert (net.metric(e1, e2) >= 0).all()


def test_alpha_stays_positive_during_training_with_large_steps(device):
    net = make_net(SMALL_MODEL, device=device)
    opt = torch.optim.Adam(net.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 64, 64, generator=g).to(device)
    for _ in range(5):
        e = net(x)
        loss = triplet_loss(net.metric(e[:2], e[2:4]), net.metric(e[:2], e[4:]))
        opt.zero_grad()
        (loss + 10 * net.alpha.sum()).backward()
        opt.step()
    assert (net.alpha > 0).all()


def test_metric_is_the_papers_weighted_l1(device):
    net = make_net(SMALL_MODEL, device=device)
    with torch.no_grad():
        net.alpha_raw.copy_(torch.linspace(-3, 3, 32))
    e1 = torch.randn(5, 32, generator=torch.Generator().manual_seed(0)).to(device)
    e2 = torch.randn(5, 32, generator=torch.Generator().manual_seed(1)).to(device)
    alpha = [math.log1p(math.exp(float(r))) for r in torch.linspace(-3, 3, 32)]
    naive = [sum(alpha[k] * abs(float(e1[i, k]) - float(e2[i, k])) for k in range(32)) for i in range(5)]
    got = net.metric(e1, e2)
    assert got.shape == (5,)
    np.testing.assert_allclose(got.detach().cpu().numpy(), naive, rtol=1e-5)
    torch.testing.assert_close(net.metric(e1, e1), torch.zeros(5, device=device))


# --------------------------------------------------------------------------- loss

def test_triplet_loss_is_the_papers_formula():
    rng = np.random.default_rng(0)
    f_same, f_diff = rng.uniform(0, 4, 16), rng.uniform(0, 4, 16)

    def sigmoid(z):
        return 1.0 / (1.0 + np.exp(-z))

    naive = -np.mean(np.log(sigmoid(1 - f_same)) + np.log(1 - sigmoid(1 - f_diff)))
    got = triplet_loss(torch.tensor(f_same), torch.tensor(f_diff))
    assert got.ndim == 0
    assert float(got) == pytest.approx(naive, rel=1e-9)
    assert same_logit(torch.tensor(0.25)) == pytest.approx(0.75)


def test_triplet_loss_is_stable_for_extreme_distances():
    tiny = triplet_loss(torch.tensor([0.0]), torch.tensor([1e4]))     # perfect triplet
    huge = triplet_loss(torch.tensor([1e4]), torch.tensor([0.0]))     # worst triplet
    assert torch.isfinite(tiny) and torch.isfinite(huge)
    assert float(tiny) == pytest.approx(-math.log(1 / (1 + math.exp(-1))), rel=1e-6)
    # -log sigmoid(1 - 1e4) = 1e4 - 1 (+ e^-9999), -log(1 - sigmoid(1)) = log(1 + e)
    assert float(huge) == pytest.approx(1e4 - 1 + math.log1p(math.e), rel=1e-6)


def test_triplet_loss_prefers_small_same_and_large_different():
    base = triplet_loss(torch.tensor([1.0]), torch.tensor([1.0]))
    assert triplet_loss(torch.tensor([0.2]), torch.tensor([1.0])) < base
    assert triplet_loss(torch.tensor([1.0]), torch.tensor([3.0])) < base


def test_loss_decreases_on_a_tiny_fixed_problem(device):
    """30 Adam steps on fixed triplets: the net learns to tell them apart."""
    g = torch.Generator().manual_seed(0)
    net = make_net(SMALL_MODEL, device=device)
    anchor = torch.rand(8, 1, 64, 64, generator=g)
    same = (anchor + 0.05 * torch.randn(8, 1, 64, 64, generator=g)).clamp(0, 1)
    different = torch.rand(8, 1, 64, 64, generator=g)
    anchor, same, different = anchor.to(device), same.to(device), different.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        ea, es, ed = net(anchor), net(same), net(different)
        loss = triplet_loss(net.metric(ea, es), net.metric(ea, ed))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0], losses
    floor = math.log1p(math.exp(-1))       # the loss of f(A,S) = 0, f(A,D) -> infinity
    assert losses[-1] < floor + 0.15, losses
    net.eval()
    with torch.no_grad():
        ea, es, ed = net(anchor), net(same), net(different)
        assert (net.metric(ea, es) < net.metric(ea, ed)).float().mean() >= 0.75


def test_model_config_rejects_sizes_the_net_cannot_pool():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(input_size=100)
    with pytest.raises(ValueError, match="input_size"):
        ModelConfig(input_size=8)
