"""The paper's branch network, the positive ``alpha`` metric and the triplet loss.

Shapes: images ``(B, 1, S, S)`` with S = ``ModelConfig.input_size`` (128) and intensities of any
scale (each image is standardised first); embeddings ``(B, D)`` with D = 128.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def standardise(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-image intensity standardisation, ``(B, 1, H, W)`` -> zero mean, unit std per image."""
    flat = x.flatten(1)
    mean = flat.mean(dim=1).view(-1, 1, 1, 1)
    std = flat.std(dim=1, unbiased=False).view(-1, 1, 1, 1)
    return (x - mean) / (std + eps)


class ResidualBlock(nn.Module):
    """``BN -> conv3x3 -> ReLU -> conv3x3(+bias) -> ReLU -> + residual -> maxpool 2x2``.

    The residual goes through a 1x1 conv when the channel count changes.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=True)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else nn.Identity()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The block's feature map before pooling, ``(B, C_out, H, W)``."""
        h = self.norm(x)
        y = F.relu(self.conv2(F.relu(self.conv1(h))))
        return y + self.skip(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(self.features(x), 2)


class Branch(nn.Module):
    """One branch of the siamese net: ``(B, 1, 128, 128)`` -> ``(B, 128)``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        chans = (1,) + tuple(config.channels)
        self.blocks = nn.ModuleList(ResidualBlock(chans[i], chans[i + 1]) for i in range(len(config.channels)))
        side = config.input_size // (2 ** len(config.channels))
        flat = config.channels[-1] * side * side
        self.head_norm = nn.BatchNorm2d(config.channels[-1])
        self.fc1 = nn.Linear(flat, config.hidden)
        self.fc_norm = nn.BatchNorm1d(config.hidden)
        self.fc2 = nn.Linear(config.hidden, config.embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = standardise(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The layers after the conv blocks: ``(B, C, side, side)`` last pooled maps -> ``(B, D)``."""
        x = self.head_norm(x).flatten(1)
        return self.fc2(self.fc_norm(self.fc1(x)))

    def stride(self, blocks: int | None = None) -> int:
        """Input pixels per cell of the map after the first ``blocks`` blocks (default: all;
        16 with 4 blocks)."""
        return 2 ** (len(self.blocks) if blocks is None else int(blocks))

    def windows(self, x: torch.Tensor, grid: int, step: int, shared: int | None = None) -> torch.Tensor:
        """Embeddings of a ``grid x grid`` grid of windows of ``x``, the first ``shared`` conv
        blocks (default: all) run once over the whole of ``x``: ``(B, 1, H, W)`` ->
        ``(B, grid * grid, D)``, row-major.

        Each window is ``input_size`` pixels square, the windows ``step`` cells (of
        ``stride(shared)`` pixels) apart, so ``H = W = input_size + (grid - 1) * step *
        stride(shared)``. Window w is the rest of the network (the other blocks, then the head)
        on the cells of the shared map it covers: not exactly the network on that window cut out
        (the shared blocks see past its edge, and ``x`` is standardised as a whole), for fewer
        operations (all shared: ``grid**2 / (H * W / input_size**2)`` times fewer).
        """
        shared = len(self.blocks) if shared is None else int(shared)
        if not 1 <= shared <= len(self.blocks):
            raise ValueError(f"windows: `shared` must be 1-{len(self.blocks)} blocks, got {shared}")
        size = self.config.input_size
        stride = self.stride(shared)
        cells = size // stride
        side = size + (grid - 1) * step * stride
        if x.shape[-2:] != (side, side):
            raise ValueError(f"windows: a {grid} x {grid} grid {step} cell(s) of {stride} px apart needs "
                             f"{side} x {side} inputs, got {tuple(x.shape[-2:])}")
        h = standardise(x)
        for block in self.blocks[:shared]:
            h = block(h)
        offs = [k * step for k in range(grid)]
        w = torch.stack([h[..., oy:oy + cells, ox:ox + cells] for oy in offs for ox in offs], 1)
        b, nw = w.shape[:2]
        w = w.reshape(b * nw, *w.shape[2:])
        for block in self.blocks[shared:]:
            w = block(w)
        return self.head(w).reshape(b, nw, -1)

    def feature_maps(self, x: torch.Tensor, blocks=None) -> list[torch.Tensor]:
        """Per-block feature maps before pooling (block ``i`` at 1/2**i of the input size).

        ``x``: ``(B, 1, H, W)`` with H, W divisible by 2**len(blocks). Returns a list of
        ``(B, C_i, H / 2**i, W / 2**i)`` for the requested block indices (default: all).
        """
        wanted = set(range(len(self.blocks))) if blocks is None else set(blocks)
        out = []
        x = standardise(x)
        last = max(wanted)
        for i, block in enumerate(self.blocks):
            f = block.features(x)
            if i in wanted:
                out.append(f)
            if i == last:
                break
            x = F.max_pool2d(f, 2)
        return out


class SiameseNet(nn.Module):
    """The branch plus the learned positive weights ``alpha`` of the metric

    ``f(I, J) = sum_k alpha_k |C_k(I) - C_k(J)|``; ``alpha = softplus(alpha_raw)`` stays positive.
    """

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        self.branch = Branch(self.config)
        raw = math.log(math.expm1(self.config.alpha_init))  # softplus^-1
        self.alpha_raw = nn.Parameter(torch.full((self.config.embedding_dim,), raw))

    @property
    def alpha(self) -> torch.Tensor:
        return F.softplus(self.alpha_raw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x)

    def metric(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        """``(..., D), (..., D) -> (...)`` weighted L1 (broadcasting): the paper's f."""
        return ((e1.float() - e2.float()).abs() * self.alpha).sum(dim=-1)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Initialise every weight from ``generator`` (explicit seeding, never the global RNG)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                if m.bias is not None:
                    fan_in = m.weight[0].numel()
                    bound = 1 / math.sqrt(fan_in)
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.reset_parameters()


def same_logit(f: torch.Tensor) -> torch.Tensor:
    """The logit of the "same" probability: ``1 - f`` (so ``sigmoid(1 - f)``)."""
    return 1.0 - f


def triplet_loss(f_same: torch.Tensor, f_diff: torch.Tensor) -> torch.Tensor:
    """The paper's loss, averaged over the batch:

    ``-[log sigmoid(1 - f(A,S)) + log(1 - sigmoid(1 - f(A,D)))]``, computed stably with
    ``logsigmoid`` (``log(1 - sigmoid(z)) = logsigmoid(-z)``).
    """
    return -(F.logsigmoid(same_logit(f_same)) + F.logsigmoid(-same_logit(f_diff))).mean()
