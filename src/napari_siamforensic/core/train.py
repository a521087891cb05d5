"""Training as a generator of progress reports (``iter_train``); ``train`` drains it.

Each step samples a batch of triplets on the device: the anchor (a centre crop of a source
patch), the "same" partner (a deformed copy of that patch) and the "different" image (a patch
of another source or, as a hard negative, another region of the same source), all with clutter.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.profiler import record_function

from .config import TrainConfig
from .data import PatchSampler, gather_training_images
from .deform import Clutter, Deformer, centre_crop
from .devices import deterministic_kernels, make_generator, resolve_device, resolve_precision
from .io import load_checkpoint, save_checkpoint
from .model import SiameseNet, triplet_loss
from .scoring import ForensicModel, pose_stack

CHECKPOINT_NAME = "checkpoint.safetensors"


@dataclass(frozen=True)
class TrainReport:
    """Progress of a training run, yielded after every step.

    ``triplet_accuracy`` is the share of the fixed validation triplets with
    ``f(A, S) < f(A, D)``; it is None on steps without an evaluation. ``model`` is set on the
    final report only (``done`` True).
    """

    step: int
    steps: int
    loss: float
    triplet_accuracy: float | None
    seconds: float
    triplets_per_second: float
    checkpoint: str | None = None
    done: bool = False
    model: ForensicModel | None = None


class TripletSampler:
    """Draws triplet batches ``(anchor, same, different)``, each ``(B, 1, 128, 128)`` in [0, 1]."""

    def __init__(self, images: list[np.ndarray], groups: list[str], config: TrainConfig, device):
        self.config = config
        self.device = device
        self.patches = PatchSampler(images, config.patch_size, groups)
        out = config.model.input_size
        self.deformer = Deformer(config.deform, config.patch_size, out)
        self.clutter = Clutter(config.deform, out)
        self.n_images = len(images)
        room = self.patches.has_hard_negative_room()
        need = config.patch_size + self.patches.hard_negative_gap
        if self.n_images == 1 and not room[0]:
            raise ValueError(f"training on a single image needs it to be at least {need} px along one side "
                             f"(patch_size {config.patch_size} plus {self.patches.hard_negative_gap} px between "
                             f"two patches), because its negatives are other regions of it; got an image of "
                             f"shape {images[0].shape}. Add more images or use a smaller `patch_size`")
        share = config.hard_negative_fraction * float(self.patches.weights[torch.from_numpy(room)].sum())
        if self.n_images > 1 and share < 0.8 * config.hard_negative_fraction:
            warnings.warn(f"hard_negative_fraction={config.hard_negative_fraction}: {int((~room).sum())} of "
                          f"{self.n_images} training images are shorter than {need} px on both sides "
                          f"(patch_size {config.patch_size} plus {self.patches.hard_negative_gap} px between the "
                          f"two patches), so they cannot give a hard negative (another region of the same "
                          f"image) and give an ordinary one instead: about {share:.0%} of negatives will be "
                          f"hard. Use larger images or a smaller `patch_size` for more.", UserWarning, stacklevel=3)

    def sample(self, batch_size: int, g: torch.Generator):
        # record_function labels: free unless a profiler runs (benchmarks/train_step.py --profile)
        cfg, ps = self.config, self.patches
        out = cfg.model.input_size
        with record_function("sample.choose"):
            idx_a = ps.sample_sources(batch_size, g)
            corners_a = ps.sample_corners(idx_a, g)
            idx_d = ps.sample_sources(batch_size, g)
            if self.n_images > 1:   # a random negative comes from another source
                clash = idx_d == idx_a
                shift = torch.randint(1, self.n_images, (batch_size,), generator=g)
                idx_d = torch.where(clash, (idx_a + shift) % self.n_images, idx_d)
            same_group = torch.rand(batch_size, generator=g) < cfg.group_negative_fraction
            group_idx, group_ok = ps.other_in_group(idx_a, g)
            idx_d = torch.where(same_group & group_ok, group_idx, idx_d)
            corners_d = ps.sample_corners(idx_d, g)
            hard = torch.rand(batch_size, generator=g) < cfg.hard_negative_fraction
            hard_corners, ok = ps.hard_negative_corners(idx_a, corners_a, g)
            use_hard = hard & ok
            if self.n_images == 1:
                use_hard = ok     # a single source: every negative must be another region of it
            idx_d = torch.where(use_hard, idx_a, idx_d)
            corners_d = torch.where(use_hard.view(-1, 1), hard_corners, corners_d)
            deform_neg = torch.rand(batch_size, generator=g) < cfg.p_deform_negative

        with record_function("sample.crop_and_copy"):
            src_a = ps.crop(idx_a, corners_a).to(self.device)
            src_d = ps.crop(idx_d, corners_d).to(self.device)
        with record_function("sample.deform"):
            anchor = centre_crop(src_a, out)
            same = self.deformer.apply(src_a, self.deformer.sample(batch_size, g, self.device))
            different = centre_crop(src_d, out).clone()
            sel = torch.nonzero(deform_neg).flatten()
            if sel.numel():
                sel_dev = sel.to(self.device)
                different[sel_dev] = self.deformer.apply(src_d[sel_dev], self.deformer.sample(sel.numel(), g, self.device))
        with record_function("sample.clutter"):
            anchor = self.clutter.apply(anchor, self.clutter.sample(batch_size, g, self.device))
            same = self.clutter.apply(same, self.clutter.sample(batch_size, g, self.device))
            different = self.clutter.apply(different, self.clutter.sample(batch_size, g, self.device))
        return anchor, same, different


def _make_optimizer(net: SiameseNet, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)


@torch.no_grad()
def closest_pose(net: SiameseNet, anchor: torch.Tensor, different: torch.Tensor, poses: str,
                 autocast_ctx=nullcontext) -> torch.Tensor:
    """Each ``different[i]`` in the pose (of ``poses``) whose f to ``anchor[i]`` is smallest: the
    negative as ``ForensicModel.distance`` with those poses sees it. Eval mode, no gradient, so
    the batch-norm statistics are left alone."""
    if poses == "none":
        return different
    was_training = net.training
    net.eval()
    stack = pose_stack(different, poses)                                # (P, B, 1, S, S)
    n_poses, batch = stack.shape[:2]
    with autocast_ctx():
        ea = net(anchor.contiguous(memory_format=torch.channels_last)).float()
        ed = net(stack.flatten(0, 1).contiguous(memory_format=torch.channels_last)).float()
    f = net.metric(ea.unsqueeze(0), ed.view(n_poses, batch, -1))        # (P, B)
    best = f.argmin(dim=0)
    net.train(was_training)
    return stack[best, torch.arange(batch, device=stack.device)]


def branch_embeddings(net: SiameseNet, anchor: torch.Tensor, same: torch.Tensor, different: torch.Tensor,
                      negative_poses: str = "none") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training forward pass of a triplet batch: ``(net(anchor), net(same), net(different))``.

    Without pose mining each batch goes through the network on its own, so in training mode
    each is batch-normalised with its own statistics (the paper's siamese branches). With
    ``negative_poses`` the three go through as one batch instead: negatives turned to their
    pose closest to the anchor differ from the other two batches in their statistics, and a
    network normalising them apart learns to tell them by those statistics alone. Measured
    (twenty-first session, docs/model-card.md): after 1,725 GPU steps of 128 normalised apart,
    256 pose-mined triplets scored 1.000 in training mode and 0.703 in eval mode, against 0.852
    and 0.863 for the weights the run started from.
    """
    if negative_poses == "none":
        return net(anchor), net(same), net(different)
    joint = torch.cat([anchor, same, different])
    if anchor.is_contiguous(memory_format=torch.channels_last):
        joint = joint.contiguous(memory_format=torch.channels_last)
    return net(joint).split(anchor.shape[0])


@torch.no_grad()
def triplet_accuracy(net: SiameseNet, triplets, autocast_ctx=nullcontext, batch_size: int = 128,
                     negative_poses: str = "none") -> float:
    """Share of triplets with ``f(A, S) < f(A, D)`` (eval mode); with ``negative_poses``, f(A, D)
    is the minimum over those poses of D."""
    was_training = net.training
    net.eval()
    anchor, same, different = triplets
    correct = 0
    for s in range(0, anchor.shape[0], batch_size):
        a, d = anchor[s:s + batch_size], different[s:s + batch_size]
        d = closest_pose(net, a, d, negative_poses, autocast_ctx)
        with autocast_ctx():
            ea, es, ed = (net(t.contiguous(memory_format=torch.channels_last)).float()
                          for t in (a, same[s:s + batch_size], d))
        correct += int((net.metric(ea, es) < net.metric(ea, ed)).sum())
    net.train(was_training)
    return correct / max(1, anchor.shape[0])


def iter_train(images, config: TrainConfig | None = None, *, init: ForensicModel | str | None = None,
               resume: str | Path | None = None, groups=None) -> Iterator[TrainReport]:
    """Train the siamese net on ``images``, yielding a :class:`TrainReport` after every step.

    Parameters
    ----------
    images : array, sequence of arrays, file paths or folders
        Training sources of any size (gray, RGB(A), stacks). Folders are searched recursively.
    config : TrainConfig, optional
    init : ForensicModel or path, optional
        Start from these weights (fine-tuning) instead of a fresh initialisation.
    resume : path, optional
        A ``checkpoint.safetensors`` of an earlier run: continue it exactly (same weights,
        optimiser and random state). ``config`` may raise ``steps``; when None the stored one is used.
    groups : sequence of str, optional
        One label per training image (per plane for stacks): images sharing a label supply each
        other's same-kind negatives (``TrainConfig.group_negative_fraction``). By default files
        are grouped by folder and each array is its own group.

    Stopping the iteration early (``break``, ``close()``, an exception in the consumer) writes
    a final checkpoint when ``config.checkpoint_dir`` is set, so no work is lost.
    """
    ckpt = load_checkpoint(resume) if resume is not None else None
    if config is None:
        config = ckpt["config"] if ckpt else TrainConfig()
    if not isinstance(config, TrainConfig):
        raise TypeError(f"`config` must be a TrainConfig, got {type(config).__name__}")
    if ckpt and ckpt["config"].replace(steps=config.steps, checkpoint_dir=config.checkpoint_dir,
                                       device=config.device) != config:
        raise ValueError("`resume`: the checkpoint was written with a different TrainConfig; only `steps`, "
                         "`checkpoint_dir` and `device` may change when resuming (a new device continues the "
                         "run, but bit-for-bit only on the same device)")
    arrays, found_groups = gather_training_images(images)
    if groups is None:
        groups = found_groups
    else:
        groups = [str(x) for x in groups]
        if len(groups) != len(arrays):
            raise ValueError(f"`groups` has {len(groups)} labels but there are {len(arrays)} training images "
                             "(stacks count one image per plane)")
    device = resolve_device(config.device)
    autocast_dtype = resolve_precision(config.precision, device)

    def autocast_ctx():
        if autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=autocast_dtype)

    g = make_generator(config.seed)
    if ckpt:
        net = ckpt["net"]
    elif init is not None:
        from .scoring import load_model

        base = load_model(init, device="cpu") if isinstance(init, (str, Path)) else init
        if not isinstance(base, ForensicModel):
            raise TypeError(f"`init` must be a ForensicModel or a model path, got {type(init).__name__}")
        if base.config != config.model:
            raise ValueError(f"`init` has architecture {base.config} but the TrainConfig asks for {config.model}")
        net = SiameseNet(config.model)
        net.load_state_dict({k: v.detach().cpu() for k, v in base.net.state_dict().items()})
    else:
        net = SiameseNet(config.model)
        net.reset_parameters(g)
    net = net.to(device)
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = _make_optimizer(net, config)
    start_step = 0
    if ckpt:
        optimizer.load_state_dict(ckpt["optim_state"])
        g.set_state(ckpt["rng_state"])
        start_step = ckpt["step"]

    sampler = TripletSampler(arrays, groups, config, device)
    val = None
    if config.validation_triplets:
        vg = make_generator(config.seed + 7919)    # fixed, independent of the training stream
        with deterministic_kernels(device):
            val = sampler.sample(config.validation_triplets, vg)

    ckpt_path = Path(config.checkpoint_dir) / CHECKPOINT_NAME if config.checkpoint_dir else None
    info = {"sources": len(arrays), "device": str(device),
            "precision": "fp32" if autocast_dtype is None else str(autocast_dtype).replace("torch.", "")}

    def write_checkpoint(step: int, rng_state: torch.Tensor) -> str | None:
        if ckpt_path is None:
            return None
        snapshot = torch.Generator()
        snapshot.set_state(rng_state)
        return str(save_checkpoint(ckpt_path, net, optimizer, snapshot, step, config, info))

    net.train()
    t0 = time.perf_counter()
    completed = start_step     # last step whose optimiser update finished, and the RNG state then
    completed_rng = g.get_state()
    saved = start_step if ckpt else -1
    finished = False
    try:
        if start_step >= config.steps:
            raise ValueError(f"`resume`: the checkpoint is already at step {start_step}; raise `steps` "
                             f"above it (got {config.steps}) to train further")
        for step in range(start_step + 1, config.steps + 1):
            ts = time.perf_counter()
            with deterministic_kernels(device):    # same seed, same weights on CUDA too
                anchor, same, different = sampler.sample(config.batch_size, g)
                different = closest_pose(net, anchor, different, config.negative_poses, autocast_ctx)
                if config.channels_last:
                    anchor, same, different = (t.contiguous(memory_format=torch.channels_last)
                                               for t in (anchor, same, different))
                with autocast_ctx():
                    ea, es, ed = branch_embeddings(net, anchor, same, different, config.negative_poses)
                loss = triplet_loss(net.metric(ea, es), net.metric(ea, ed))
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):   # before the update: the weights stay as they were
                    raise FloatingPointError(f"the loss became {loss_value} at step {step}; lower `lr` "
                                             f"(now {config.lr}) or use precision='fp32'")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                completed, completed_rng = step, g.get_state()
                dt = time.perf_counter() - ts
                acc = None
                last = step == config.steps
                if val is not None and (step % config.eval_every == 0 or last):
                    acc = triplet_accuracy(net, val, autocast_ctx, negative_poses=config.negative_poses)
            written = None
            if ckpt_path is not None and (step % config.checkpoint_every == 0 or last):
                written = write_checkpoint(step, completed_rng)
                saved = step
            model = None
            if last:
                finished = True
                model = ForensicModel(net, str(device), info=dict(info, steps=step))
            yield TrainReport(step=step, steps=config.steps, loss=loss_value, triplet_accuracy=acc,
                              seconds=time.perf_counter() - t0, triplets_per_second=config.batch_size / dt,
                              checkpoint=written, done=last, model=model)
    finally:
        # cancelled (generator closed) or failed: keep the last completed step, unless saved already
        if not finished and ckpt_path is not None and completed > max(saved, 0):
            write_checkpoint(completed, completed_rng)


def train(images, config: TrainConfig | None = None, *, init=None, resume=None, groups=None,
          progress: Callable[[TrainReport], object] | None = None) -> ForensicModel:
    """Train and return the model; ``progress(report)`` is called after every step.

    Same arguments as :func:`iter_train`.

    Examples
    --------
    >>> import numpy as np, napari_siamforensic as sf
    >>> imgs = [np.random.default_rng(i).random((200, 200)) for i in range(3)]
    >>> model = sf.train(imgs, sf.TrainConfig(steps=2, batch_size=4, validation_triplets=8))
    >>> model.embed(imgs).shape
    (3, 128)
    """
    if progress is not None and not callable(progress):
        raise TypeError(f"`progress` must be callable or None, got {type(progress).__name__}")
    model = None
    for report in iter_train(images, config, init=init, resume=resume, groups=groups):
        if progress is not None:
            progress(report)
        if report.done:
            model = report.model
    assert model is not None
    return model
