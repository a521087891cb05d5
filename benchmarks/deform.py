"""Deformation pipeline: batched on-device (Deformer + Clutter) vs. a per-image PIL/scikit-image loop.

    python benchmarks/deform.py                # quick (~20 s of CPU)
    python benchmarks/deform.py --threads 1    # torch on one thread throughout (robust under load)
    python benchmarks/deform.py --full         # more repeats, training-step share at 32/64/128

Prints, in the same run:

1. seconds for a batch of 128 deformations (256 px sources in, 128 px out, clutter included)
   done by ``napari_siamforensic.core.deform`` (``Deformer`` + ``Clutter``, one batch), with
   torch's default threads and with one thread;
2. seconds for the same families, probabilities and ranges (``DeformConfig()``) done per image
   in a Python loop with numpy, scikit-image (``warp`` with a ``ProjectiveTransform`` for the
   perspective, another ``warp`` for the similarity, ``resize`` for the crop, ``gaussian`` for
   blur) and Pillow (JPEG through an in-memory file, text and boxes with ``ImageDraw``), as a
   script that follows the authors' code would do it; and the ratio;
3. the share of a training step the sampling takes: one ``TripletSampler.sample`` (patches,
   1.5 deformations per triplet, clutter on all three) and one forward/backward/optimiser step
   of the default training configuration, at batch 64 and 128.

The per-image loop is single-threaded (scikit-image and Pillow run on one core), so the
one-thread ratio is the like-for-like one; the default-thread ratio is what training sees.
Times are given as wall seconds (median and best) and as process CPU seconds: on a machine
shared with other work, the CPU seconds of one-thread code are the load-robust figure.
Benchmarks are not tests: nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import io
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (contention_note, load, machine_line, make_trainer, median_phases,  # noqa: E402
                     scenes, set_threads, table, timed, train_step, training_pool)

from napari_siamforensic import DeformConfig  # noqa: E402
from napari_siamforensic.core.deform import Clutter, Deformer, _LETTERS  # noqa: E402
from napari_siamforensic.core.devices import make_generator  # noqa: E402


# --------------------------------------------------------------------------- the per-image loop

class LoopDeformer:
    """The same deformations as :class:`Deformer` + :class:`Clutter`, one image at a time with
    numpy / scikit-image / Pillow. Parameters are drawn from a ``numpy.random.Generator`` with
    the probabilities and ranges of ``config``. ``(S, S)`` float32 in, ``(O, O)`` float32 out."""

    def __init__(self, config: DeformConfig, output_size: int = 128):
        from PIL import ImageFont

        self.c = config
        self.o = output_size
        try:
            self.font = ImageFont.load_default(size=16)
        except TypeError:
            self.font = ImageFont.load_default()

    @staticmethod
    def _log_uniform(rng, low, high):
        return math.exp(rng.uniform(math.log(low), math.log(high)))

    def deform(self, src: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from skimage.filters import gaussian
        from skimage.transform import AffineTransform, ProjectiveTransform, resize, warp

        c, o = self.c, self.o
        x = src
        active = rng.random() >= c.p_none
        if active:
            if rng.random() < c.p_reflect:
                if rng.random() < 0.5:
                    x = x[:, ::-1]
                if rng.random() < 0.5:
                    x = x[::-1, :]
            if rng.random() < c.p_rot90:
                x = np.rot90(x, int(rng.integers(1, 4)))
            s = x.shape[0]
            if rng.random() < c.p_perspective:
                px = int(round(c.perspective_px))
                corners = np.array([[0, 0], [s - 1, 0], [s - 1, s - 1], [0, s - 1]], float)
                moved = corners + rng.integers(-px, px, size=(4, 2))
                t = ProjectiveTransform.from_estimate(corners, moved)
                x = warp(x, t.inverse, order=1, mode="reflect", preserve_range=True)
            if rng.random() < c.p_similarity:
                angle = math.radians(rng.uniform(*c.rotation_deg))
                scale = self._log_uniform(rng, *c.scale)
                tx, ty = rng.uniform(-c.translate_px, c.translate_px, size=2)
                if scale < 1:   # shrinking: low-pass first, as the batched pipeline does
                    x = gaussian(x, sigma=0.5 * (1 / scale - 1), mode="reflect", preserve_range=True)
                cx = (s - 1) / 2
                to_c = np.array([[1, 0, -cx], [0, 1, -cx], [0, 0, 1]])
                sim = np.array([[scale * math.cos(angle), -scale * math.sin(angle), tx],
                                [scale * math.sin(angle), scale * math.cos(angle), ty], [0, 0, 1]])
                back = np.array([[1, 0, cx], [0, 1, cx], [0, 0, 1]])
                t = AffineTransform(matrix=back @ sim @ to_c)
                x = warp(x, t.inverse, order=1, mode="reflect", preserve_range=True)
            top = (s - o) // 2
            x = x[top:top + o, top:top + o]
            if rng.random() < c.p_crop:
                frac = rng.uniform(*c.crop_fraction)
                side = max(2, int(round(frac * o)))
                oy, ox = rng.integers(0, o - side + 1, size=2)
                x = resize(x[oy:oy + side, ox:ox + side], (o, o), order=1, mode="reflect", anti_aliasing=False)
        else:
            top = (x.shape[0] - o) // 2
            x = x[top:top + o, top:top + o]
        x = np.clip(np.ascontiguousarray(x, dtype=np.float32), 0, 1)
        if not active:
            return x
        if rng.random() < c.p_gamma:
            x = x ** self._log_uniform(rng, *c.gamma)
        if rng.random() < c.p_levels:
            black, white = rng.uniform(*c.levels_black), rng.uniform(*c.levels_white)
            x = np.clip((x - black) / max(white - black, 1e-3), 0, 1)
        if rng.random() < c.p_local_edit:
            cy, cx = rng.uniform(0, o, size=2)
            radius = rng.uniform(*c.edit_radius) * o
            yy, xx = np.mgrid[0:o, 0:o]
            dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            ramp = max(c.edit_ramp_px, 1e-3)
            mask = np.clip((radius + ramp - dist) / ramp, 0, 1)
            if rng.random() < 0.5:
                x = x * (1 - mask)
            else:
                x = np.clip(x * (1 + mask * (rng.uniform(*c.edit_multiply) - 1)), 0, 1)
        if rng.random() < c.p_invert:
            x = 1 - x
        if rng.random() < c.p_blur:
            x = gaussian(x, sigma=rng.uniform(*c.blur_sigma), mode="reflect", preserve_range=True)
        if rng.random() < c.p_noise:
            x = np.clip(x + rng.normal(0, rng.uniform(*c.noise_sigma), size=x.shape), 0, 1)
        if rng.random() < c.p_jpeg:
            x = self._jpeg(x, int(rng.uniform(*c.jpeg_quality)))
        return x.astype(np.float32)

    @staticmethod
    def _jpeg(x: np.ndarray, quality: int) -> np.ndarray:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as im:
            return np.asarray(im, np.float32) / 255.0

    def clutter(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from PIL import Image, ImageDraw

        c, o = self.c, self.o
        r = rng.random()
        mask = None
        value = 0.0
        if r < c.p_box:
            mask = Image.new("L", (o, o), 0)
            h, w = rng.uniform(o / 3, o / 2, size=2)
            y0, x0 = rng.uniform(0, o - h), rng.uniform(0, o - w)
            ImageDraw.Draw(mask).rectangle([x0, y0, x0 + w, y0 + h], outline=255, width=int(rng.integers(1, 3)))
            value = rng.random()
        elif r < c.p_box + c.p_text:
            mask = Image.new("L", (o, o), 0)
            text = "".join(rng.choice(list(_LETTERS), size=int(rng.integers(5, 15))))
            ImageDraw.Draw(mask).text((int(rng.integers(-o // 4, o // 2)), int(rng.integers(0, o - 20))), text,
                                      fill=255, font=self.font)
            value = rng.uniform(0.75, 1.0)
        if mask is not None:
            m = np.asarray(mask, np.float32) / 255.0
            x = x * (1 - m) + value * m
        if rng.random() < c.p_scalebar:
            length, thick = int(rng.integers(15, 41)), int(rng.integers(2, 5))
            corner = int(rng.integers(0, 4))
            x0 = 6 if corner % 2 == 0 else o - 6 - length
            y0 = 6 if corner < 2 else o - 6 - thick
            x = x.copy()
            x[y0:y0 + thick, x0:x0 + length] = float(rng.integers(0, 2))
        return x

    def __call__(self, sources: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.stack([self.clutter(self.deform(s, rng), rng) for s in sources])


# --------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128, help="deformations per batch (default 128)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of the batched pipeline")
    ap.add_argument("--loop-repeats", type=int, default=1, help="timed repeats of the per-image loop")
    ap.add_argument("--full", action="store_true", help="more repeats; training-step share at 32, 64 and 128")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    if args.full:
        args.repeats, args.loop_repeats = max(args.repeats, 7), max(args.loop_repeats, 3)
    n, size, out = args.batch, 256, 128
    print(machine_line(args.device))
    note = contention_note()
    if note:
        print(note)
    print(f"deformation pipeline: batch of {n}, {size} px sources -> {out} px, DeformConfig() defaults")

    pool = [im for _, im in scenes(32, seed=0, size=size)]
    sources_np = np.stack([pool[i % len(pool)] for i in range(n)]).astype(np.float32)
    dev = torch.device(args.device)
    sources = torch.from_numpy(sources_np).unsqueeze(1).to(dev)
    config = DeformConfig()
    deformer, clutter = Deformer(config, size, out), Clutter(config, out)
    g = make_generator(0)

    def batched():
        params = deformer.sample(n, g, dev)
        y = deformer.apply(sources, params)
        return clutter.apply(y, clutter.sample(n, g, dev))

    rows = []
    default_threads = torch.get_num_threads()
    r_batched = timed(batched, repeats=args.repeats, warmup=1, device=dev)
    rows.append(["batched (Deformer + Clutter)", f"torch, {default_threads} thread(s)",
                 f"{r_batched['median']:.3f}", f"{r_batched['min']:.3f}", f"{r_batched['cpu']:.3f}", r_batched["load"]])
    r_batched1 = None
    if dev.type == "cpu" and default_threads > 1:
        torch.set_num_threads(1)
        r_batched1 = timed(batched, repeats=args.repeats, warmup=1, device=dev)
        torch.set_num_threads(default_threads)
        rows.append(["batched (Deformer + Clutter)", "torch, 1 thread",
                     f"{r_batched1['median']:.3f}", f"{r_batched1['min']:.3f}", f"{r_batched1['cpu']:.3f}",
                     r_batched1["load"]])

    loop = LoopDeformer(config, out)
    rng = np.random.default_rng(0)
    loop(sources_np[:4], rng)                  # imports, font
    r_loop = timed(lambda: loop(sources_np, rng), repeats=args.loop_repeats, warmup=0)
    rows.append(["per-image loop (numpy/scikit-image/PIL)", "1 thread",
                 f"{r_loop['median']:.3f}", f"{r_loop['min']:.3f}", f"{r_loop['cpu']:.3f}", r_loop["load"]])
    print()
    print(table(rows, ["pipeline", "threads", "wall s / batch (median)", "wall s / batch (best)", "CPU s / batch",
                       "load at the end"]))
    print()
    print(f"ratio loop / batched, {default_threads} thread(s): {r_loop['median'] / r_batched['median']:.2f}x (wall "
          f"medians), {r_loop['min'] / r_batched['min']:.2f}x (wall best)")
    one = r_batched1 or (r_batched if default_threads == 1 else None)
    if one:
        print(f"ratio loop / batched, 1 thread each: {r_loop['median'] / one['median']:.2f}x (wall medians), "
              f"{r_loop['min'] / one['min']:.2f}x (wall best), {r_loop['cpu'] / one['cpu']:.2f}x (CPU seconds)")
    per_image = 1e3 * (one or r_batched)["cpu"] / n
    print(f"per image (CPU): batched {per_image:.2f} ms, loop {1e3 * r_loop['cpu'] / n:.2f} ms")

    # ------------------------------------------------------------------ share of a training step
    print()
    print("share of a training step (default TrainConfig: precision auto, channels_last; pool of 24 generated "
          "384 px scenes). sample = TripletSampler.sample (patches, 1.5 deformations per triplet, clutter on all "
          "three); step = sample + forward + backward + optimiser. Process CPU seconds, one warm-up step first.")
    arrays, groups = training_pool()
    rows = []
    for bs in ((32, 64, 128) if args.full else (64, 128)):
        tr = make_trainer(arrays, groups, batch_size=bs, device=args.device)
        train_step(tr)                                      # warm-up
        m = median_phases([train_step(tr) for _ in range(3 if args.full else 1)])
        deform_cpu = (one or r_batched)["cpu"] * bs / n
        rows.append([bs, tr["precision"].replace("bfloat16", "bf16").replace("float32", "fp32"),
                     f"{m['sample_cpu']:.3f}", f"{m['cpu']:.3f}", f"{100 * m['sample_cpu'] / m['cpu']:.1f}%",
                     f"{100 * deform_cpu / m['cpu']:.1f}%", f"{bs / m['cpu']:.1f}", f"{m['total']:.2f}",
                     f"{bs / m['total']:.1f}", load()])
    print(table(rows, ["batch", "precision", "sample CPU s", "step CPU s", "sample share",
                       "Deformer+Clutter share", "triplets per CPU-s", "step wall s", "triplets/s wall", "load"]))
    print("(Deformer+Clutter share: the one-thread batched CPU time above, scaled to the batch, over the step's.)")

if __name__ == "__main__":
    main()
