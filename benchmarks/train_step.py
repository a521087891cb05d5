"""A training step's time split, triplets/s, channels_last and precision; loss curves fp32 vs bf16.

    python benchmarks/train_step.py                      # quick split table (~1-2 min on 2 busy cores)
    python benchmarks/train_step.py --threads 1          # the same on one thread (robust under load)
    python benchmarks/train_step.py --full               # batch 32/64/128 x channels_last x fp32/bf16
    python benchmarks/train_step.py --curve              # loss curves fp32 vs bf16 only
    python benchmarks/train_step.py --profile 20 --device cuda   # where a step's time goes

The step is the one of ``napari_siamforensic.core.train.iter_train``, rebuilt from the same
parts (``TripletSampler``, ``SiameseNet`` with ``reset_parameters``, the optimiser of the
``TrainConfig``, ``triplet_loss``) with ``time.perf_counter`` around each phase:

* sample    -- ``TripletSampler.sample``: patches, deformations, clutter (the full pipeline);
* forward   -- three branch passes (anchor, same, different), the metric and the loss;
* backward  -- ``zero_grad`` + ``loss.backward()``;
* optimiser -- ``optimizer.step()`` (Adam, the default).

The training pool is 24 generated scenes of 384 px (``core.synthetic.generate_scenes``).
Triplets/s counts the whole step, sampling included. Phases are given in process CPU seconds
(all threads): with ``--threads 1`` that is what the work costs whatever else runs on the
machine; wall seconds and triplets/s wall are what a user saw during this run.
Loss curves: the same initial weights and the same pre-sampled triplet batches for both
precisions, so the curves differ only by arithmetic.
Benchmarks are not tests: nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (contention_note, load, machine_line, make_trainer, median_phases, set_threads,  # noqa: E402
                     table, train_step, training_pool)


def split_table(arrays, groups, combos, steps: int, device: str) -> None:
    rows = []
    for bs, cl, precision in combos:
        tr = make_trainer(arrays, groups, batch_size=bs, precision=precision, channels_last=cl, device=device)
        train_step(tr)                                  # warm-up (oneDNN primitives, allocator)
        m = median_phases([train_step(tr) for _ in range(steps)])
        share = {k: 100 * m[k + "_cpu"] / m["cpu"] for k in ("sample", "forward", "backward", "optimiser")}
        rows.append([bs, "on" if cl else "off", tr["precision"].replace("bfloat16", "bf16").replace("float32", "fp32"),
                     f"{m['sample_cpu']:.2f} ({share['sample']:.0f}%)",
                     f"{m['forward_cpu']:.2f} ({share['forward']:.0f}%)",
                     f"{m['backward_cpu']:.2f} ({share['backward']:.0f}%)",
                     f"{m['optimiser_cpu']:.3f} ({share['optimiser']:.0f}%)", f"{m['cpu']:.2f}",
                     f"{bs / m['cpu']:.1f}", f"{m['total']:.2f}", f"{bs / m['total']:.1f}", load()])
        print("  done:", rows[-1][:3], f"{rows[-1][8]} triplets per CPU-s", rows[-1][-1], flush=True)
    print()
    print("phases in process CPU seconds per step (share of the step); wall = elapsed time (inflated by load)")
    print(table(rows, ["batch", "channels_last", "precision", "sample", "forward", "backward", "optimiser",
                       "step cpu s", "triplets per cpu-s", "step wall s", "triplets/s wall", "load"]))


def loss_curves(arrays, groups, steps: int, batch: int, device: str, seed: int) -> None:
    base = make_trainer(arrays, groups, batch_size=batch, precision="fp32", device=device, seed=seed)
    batches = [base["sampler"].sample(batch, base["generator"]) for _ in range(steps)]
    init = {k: v.detach().clone() for k, v in base["net"].state_dict().items()}
    curves = {}
    for precision in ("fp32", "bf16"):
        tr = make_trainer(arrays, groups, batch_size=batch, precision=precision, device=device, seed=seed)
        tr["net"].load_state_dict(init)
        losses = [train_step(tr, b)["loss"] for b in batches]
        curves[precision] = losses
        print(f"  {precision}: {steps} steps done, {load()}", flush=True)
    window = max(1, steps // 6)
    rows = []
    for start in range(0, steps, window):
        f32 = statistics.fmean(curves["fp32"][start:start + window])
        b16 = statistics.fmean(curves["bf16"][start:start + window])
        rows.append([f"{start + 1}-{min(steps, start + window)}", f"{f32:.4f}", f"{b16:.4f}", f"{b16 - f32:+.4f}"])
    print()
    print(f"loss curves, batch {batch}, {steps} steps, seed {seed}, Adam lr 3e-4, channels_last, same initial "
          f"weights and same triplet batches for both (mean loss per window of {window} steps):")
    print(table(rows, ["steps", "fp32 loss", "bf16 loss", "bf16 - fp32"]))
    first, last = slice(0, window), slice(steps - window, steps)
    for p in ("fp32", "bf16"):
        c = curves[p]
        print(f"{p}: first window {statistics.fmean(c[first]):.4f} -> last window {statistics.fmean(c[last]):.4f} "
              f"(fall {statistics.fmean(c[first]) - statistics.fmean(c[last]):+.4f})")
    diffs = [abs(a - b) for a, b in zip(curves["fp32"], curves["bf16"])]
    print(f"per-step |bf16 - fp32| loss: median {statistics.median(diffs):.4f}, max {max(diffs):.4f}; {load()}")


PROFILE_LABELS = ("sample.choose", "sample.crop_and_copy", "sample.deform", "sample.clutter",
                  "forward", "backward", "optimiser")


def profile_steps(arrays, groups, steps: int, batch: int, device: str) -> None:
    """``steps`` training steps under ``torch.profiler``: per-step CPU time (and, on CUDA, GPU
    time) of each labelled phase of the step, then the operators with most CPU time of their own."""
    from torch.profiler import ProfilerActivity, profile

    tr = make_trainer(arrays, groups, batch_size=batch, precision="auto", device=device)
    train_step(tr)
    train_step(tr)                                    # warm-up: allocator, kernels, autotuning
    cuda = tr["device"].type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            train_step(tr)
    wall = (time.perf_counter() - t) / steps
    events = {e.key: e for e in prof.key_averages()}
    rows = []
    for label in PROFILE_LABELS:
        e = events.get(label)
        if e is None:
            continue
        gpu = getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0.0))
        rows.append([label, f"{e.cpu_time_total / steps / 1e3:.1f}", f"{gpu / steps / 1e3:.1f}" if cuda else "-"])
    print(f"profile: {steps} steps of batch {batch}, {tr['precision']}, {tr['device']}; "
          f"{wall * 1e3:.0f} ms wall per step under the profiler ({batch / wall:.0f} triplets/s); {load()}")
    print(table(rows, ["phase", "CPU ms per step", "GPU ms per step"]))
    print()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="batch 32, 64, 128 x channels_last on/off x fp32/bf16")
    ap.add_argument("--steps", type=int, default=1, help="timed steps per configuration (after one warm-up)")
    ap.add_argument("--curve", action="store_true", help="run the fp32 vs bf16 loss curves (instead of the split)")
    ap.add_argument("--curve-steps", type=int, default=60)
    ap.add_argument("--curve-batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="instead: profile N steps with torch.profiler (per phase of the sampler and the "
                         "step, CPU and GPU time; the top operators)")
    ap.add_argument("--profile-batch", type=int, default=128)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    print(machine_line(args.device))
    note = contention_note()
    if note:
        print(note)
    arrays, groups = training_pool()
    if args.profile:
        profile_steps(arrays, groups, args.profile, args.profile_batch, args.device)
        return
    if args.curve:
        loss_curves(arrays, groups, args.curve_steps, args.curve_batch, args.device, args.seed)
        return
    if args.full:
        combos = [(bs, cl, p) for bs in (32, 64, 128) for p in ("fp32", "bf16") for cl in (True, False)]
        args.steps = max(args.steps, 2)
    else:
        combos = [(32, True, "fp32"), (32, True, "bf16"), (32, False, "bf16"), (64, True, "bf16")]
    print(f"training step split ({args.steps} timed step(s) per row after a warm-up; seconds per step, median)")
    split_table(arrays, groups, combos, args.steps, args.device)


if __name__ == "__main__":
    main()
