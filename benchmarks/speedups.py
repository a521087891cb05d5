"""Proposed speed-ups, measured against the current code in the same run.

    python benchmarks/speedups.py                  # deformation candidates + allocator (~40 s of CPU)
    python benchmarks/speedups.py --only deform
    python benchmarks/speedups.py --only allocator

The candidates live here, not in the core, until the core's owners take them. Each one must
give identical results (pixels checked with ``torch.equal``) and is timed in process CPU
seconds on one thread, interleaved with the current code, so load from other processes
affects both alike.

1. ``blur_subset``: ``gaussian_blur`` only on the images whose sigma is > 0 (the rest are
   copied). In ``Deformer.warp`` the anti-alias pre-blur runs on the 256 px sources, where
   ~25% of images shrink; a grouped (depthwise) conv over all 128 images at 256 px costs
   ~25x what it does at 128 px on this CPU (a cache cliff), for identity kernels mostly.
2. ``clutter_subset``: ``Clutter.apply`` draws each family (box, text, scale bar) only on the
   images that have it, instead of full-batch masks multiplied by a 0/1 flag.
3. ``allocator`` (no code change, a process setting): glibc's malloc serves the network's large
   activation buffers (tens to hundreds of MB at batch 256) with fresh ``mmap`` s and returns
   them on ``free``, so every forward pass page-faults its activations in again: kernel time
   rivals the arithmetic. ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=
   4294967295`` (or jemalloc/tcmalloc via ``LD_PRELOAD``) keeps the memory in the process. Same
   arithmetic, so the same embeddings; the cost is a higher resident set. Measured in child
   processes (the setting is read when a process starts): user and system CPU seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load, machine_line, scenes, table  # noqa: E402

from napari_siamforensic import DeformConfig  # noqa: E402
from napari_siamforensic.core import deform as D  # noqa: E402
from napari_siamforensic.core.devices import make_generator  # noqa: E402

_original_blur = D.gaussian_blur


def blur_subset(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``gaussian_blur`` on the images with sigma > 0 only; same pixels as the original."""
    idx = torch.nonzero(sigma > 0).flatten()
    if idx.numel() == 0:
        return x
    if idx.numel() == x.shape[0]:
        return _original_blur(x, sigma)
    idx = idx.to(x.device)
    out = x.clone()
    out[idx] = _original_blur(x[idx], sigma.to(x.device)[idx])
    return out


@contextmanager
def patched_blur():
    D.gaussian_blur = blur_subset
    try:
        yield
    finally:
        D.gaussian_blur = _original_blur


class SubsetClutter(D.Clutter):
    """``Clutter`` that computes each family's mask only for the images that have it."""

    def apply(self, x: torch.Tensor, params) -> torch.Tensor:
        o = x.shape[-1]
        dev, dt = x.device, x.dtype
        yy = torch.arange(o, device=dev, dtype=dt).view(1, 1, o, 1)
        xx = torch.arange(o, device=dev, dtype=dt).view(1, 1, 1, o)
        out = x
        cloned = False

        def rows(flag):
            return torch.nonzero(flag).flatten()

        def paste(i, m, value):
            nonlocal out, cloned
            if not cloned:
                out, cloned = out.clone(), True
            out[i] = out[i] * (1 - m) + value * m

        i = rows(params["box"])
        if i.numel():
            v = lambda t: t[i].to(dt).view(-1, 1, 1, 1)  # noqa: E731
            y0, x0 = v(params["box_corner"][:, 0]), v(params["box_corner"][:, 1])
            y1, x1 = y0 + v(params["box_size"][:, 0]), x0 + v(params["box_size"][:, 1])
            t = v(params["box_thickness"])
            inside = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
            core = (yy >= y0 + t) & (yy < y1 - t) & (xx >= x0 + t) & (xx < x1 - t)
            paste(i, (inside & ~core).to(dt), v(params["box_value"]))
        i = rows(params["text"])
        if i.numel():
            n = i.numel()
            bank = D.text_bank().to(dev, dt)
            _, bh, bw = bank.shape
            ty = yy[0, 0, :, 0].view(1, o, 1) - params["text_pos"][i, 0].view(n, 1, 1)
            tx = xx[0, 0, 0, :].view(1, 1, o) - params["text_pos"][i, 1].view(n, 1, 1)
            valid = (ty >= 0) & (ty < bh) & (tx >= 0) & (tx < bw)
            m = bank[params["text_index"][i].view(n, 1, 1), ty.clamp(0, bh - 1).long(), tx.clamp(0, bw - 1).long()]
            paste(i, (m * valid).unsqueeze(1), params["text_value"][i].to(dt).view(n, 1, 1, 1))
        i = rows(params["scalebar"])
        if i.numel():
            v = lambda t: t[i].to(dt).view(-1, 1, 1, 1)  # noqa: E731
            length, thick = v(params["bar_length"]), v(params["bar_thickness"])
            corner = params["bar_corner"][i]
            margin = 6.0
            right = (corner % 2 == 1).to(dt).view(-1, 1, 1, 1)
            bottom = (corner >= 2).to(dt).view(-1, 1, 1, 1)
            x0 = margin + right * (o - 2 * margin - length)
            y0 = margin + bottom * (o - 2 * margin - thick)
            m = ((yy >= y0) & (yy < y0 + thick) & (xx >= x0) & (xx < x0 + length)).to(dt)
            paste(i, m, v(params["bar_value"]))
        return out


def cpu_time(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


TUNED_MALLOC = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295"


def allocator_child(mallopt: bool = False) -> dict:
    """Embedding (batch 256, fp32 and bf16) and a training step (bf16, batch 32, fixed batch),
    user and system CPU seconds, peak RSS. ``mallopt``: first call
    ``core.devices.retain_freed_memory()`` (the same limits as the tunables, set at run time)."""
    from _common import make_trainer, train_step, training_pool

    import napari_siamforensic as sf
    from napari_siamforensic.core.devices import retain_freed_memory
    from napari_siamforensic.core.model import SiameseNet

    if mallopt and not retain_freed_memory():
        raise SystemExit("retain_freed_memory() could not be applied (not glibc)")
    torch.set_num_threads(1)
    net = SiameseNet()
    net.reset_parameters(torch.Generator().manual_seed(0))
    x = torch.rand(256, 1, 128, 128, generator=torch.Generator().manual_seed(1))
    out = {}
    for precision in ("fp32", "bf16"):
        model = sf.ForensicModel(net, "cpu", precision=precision, batch_size=256)
        e0 = model.embed_tensor(x)
        t0 = os.times()
        e1 = model.embed_tensor(x)
        t1 = os.times()
        out[f"embed {precision}"] = {"user": t1.user - t0.user, "sys": t1.system - t0.system, "n": 256,
                                     "sum": float(e1.double().sum()), "same": bool(torch.equal(e0, e1))}
    arrays, groups = training_pool(8)
    tr = make_trainer(arrays, groups, batch_size=32, precision="bf16")
    batch = tr["sampler"].sample(32, tr["generator"])
    train_step(tr, batch)
    t0 = os.times()
    for _ in range(2):
        train_step(tr, batch)
    t1 = os.times()
    out["train step bf16 b32"] = {"user": (t1.user - t0.user) / 2, "sys": (t1.system - t0.system) / 2, "n": 32}
    with open("/proc/self/status") as fh:
        out["peak_mib"] = [int(line.split()[1]) // 1024 for line in fh if line.startswith("VmHWM")][0]
    return out


def allocator_section() -> None:
    if not sys.platform.startswith("linux"):
        print("allocator: glibc tunables apply on Linux only; skipped")
        return
    res = {}
    variants = (("default malloc", [], {}), ("tuned malloc", [], {"GLIBC_TUNABLES": TUNED_MALLOC}),
                ("mallopt", ["--mallopt"], {}))
    for name, extra, env in variants:
        r = subprocess.run([sys.executable, __file__, "--allocator-child", *extra], capture_output=True, text=True,
                           env={**os.environ, **env})
        if r.returncode:
            print(f"allocator child failed:\n{r.stderr[-2000:]}")
            return
        res[name] = json.loads(r.stdout.strip().splitlines()[-1])
    rows = []
    for job in ("embed fp32", "embed bf16", "train step bf16 b32"):
        cells = [job]
        for name in res:
            d = res[name][job]
            cells += [f"{d['user']:.2f} / {d['sys']:.2f}", f"{d['n'] / (d['user'] + d['sys']):.0f}"]
        a = res["default malloc"][job]
        for name in ("tuned malloc", "mallopt"):
            b = res[name][job]
            cells.append(f"{(a['user'] + a['sys']) / (b['user'] + b['sys']):.2f}x")
        rows.append(cells)
    peak = ["peak RSS MiB"]
    for name in res:
        peak += [str(res[name]["peak_mib"]), ""]
    rows.append(peak + ["", ""])
    same = all(res["default malloc"][j]["sum"] == res[name][j]["sum"]
               for j in ("embed fp32", "embed bf16") for name in ("tuned malloc", "mallopt"))
    print(f"allocator: tuned = GLIBC_TUNABLES={TUNED_MALLOC} at start-up; mallopt = "
          f"core.devices.retain_freed_memory() at run time; 1 thread; CPU seconds user / system per call "
          f"(embedding: 256 images at batch 256; train step: forward + backward + Adam on a fixed batch)")
    print(table(rows, ["job", "default: user / sys s", "default: items per CPU-s", "tuned: user / sys s",
                       "tuned: items per CPU-s", "mallopt: user / sys s", "mallopt: items per CPU-s",
                       "speed-up tuned", "speed-up mallopt"]))
    print(f"embeddings identical under all three: {same}; {load()}")


def deform_section():
    pool = [im for _, im in scenes(32, seed=0, size=256)]
    n = 128
    src = torch.from_numpy(np.stack([pool[i % len(pool)] for i in range(n)])).unsqueeze(1)
    config = DeformConfig()
    deformer = D.Deformer(config)
    clutter, fast_clutter = D.Clutter(config), SubsetClutter(config)

    # identity over several parameter draws
    g = make_generator(0)
    identical = {"blur_subset": True, "clutter_subset": True}
    for _ in range(8):
        p, cp = deformer.sample(n, g), clutter.sample(n, g)
        ref = deformer.apply(src, p)
        with patched_blur():
            new = deformer.apply(src, p)
        identical["blur_subset"] &= bool(torch.equal(ref, new))
        identical["clutter_subset"] &= bool(torch.equal(clutter.apply(ref, cp), fast_clutter.apply(ref, cp)))

    p, cp = deformer.sample(n, g), clutter.sample(n, g)
    warped = deformer.warp(src, p)
    cases = {
        "Deformer.warp": (lambda: deformer.warp(src, p), None),
        "Deformer.photometric": (lambda: deformer.photometric(warped, p), None),
        "Clutter.apply": (lambda: clutter.apply(warped, cp), lambda: fast_clutter.apply(warped, cp)),
        "Deformer + Clutter (sample + apply)": (
            lambda: clutter.apply(deformer.apply(src, deformer.sample(n, g)), clutter.sample(n, g)),
            lambda: fast_clutter.apply(deformer.apply(src, deformer.sample(n, g)), fast_clutter.sample(n, g))),
    }
    from _common import make_trainer, training_pool

    arrays, groups = training_pool()
    tr = make_trainer(arrays, groups, batch_size=64)
    sampler, tg = tr["sampler"], tr["generator"]
    fast_sampler_clutter = SubsetClutter(sampler.clutter.config, sampler.clutter.output_size)

    def sample_new():
        slow, sampler.clutter = sampler.clutter, fast_sampler_clutter
        try:
            return sampler.sample(64, tg)
        finally:
            sampler.clutter = slow

    cases["TripletSampler.sample, batch 64 (training's sampling)"] = (lambda: sampler.sample(64, tg), sample_new)
    rows = []
    for name, (old, new) in cases.items():
        def candidate(new=new, old=old):
            with patched_blur():
                return (new or old)()
        old(), candidate()                                  # warm-up
        t_old, t_new = [], []
        for _ in range(5):                                  # interleaved
            t_old.append(cpu_time(old))
            t_new.append(cpu_time(candidate))
        a, b = float(np.median(t_old)), float(np.median(t_new))
        rows.append([name, f"{1e3 * a:.1f}", f"{1e3 * b:.1f}", f"{a / b:.2f}x", load()])
    print(f"batch {n} (unless stated), 256 px -> 128 px, DeformConfig() defaults, 1 thread, "
          f"median CPU ms of 5 interleaved runs")
    print(table(rows, ["stage", "current ms", "with both candidates ms", "speed-up", "load"]))
    print("bit-identical over 8 parameter draws:", ", ".join(f"{k} {v}" for k, v in identical.items()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("deform", "allocator"), default=None)
    ap.add_argument("--allocator-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mallopt", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.allocator_child:
        print(json.dumps(allocator_child(args.mallopt)))
        return
    torch.set_num_threads(1)
    print(machine_line())
    if args.only in (None, "deform"):
        deform_section()
    if args.only in (None, "allocator"):
        print()
        allocator_section()


if __name__ == "__main__":
    main()
