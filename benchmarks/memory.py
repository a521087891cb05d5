"""Peak memory (resident set) of a training step at batch 128 and of streamed embedding.

    python benchmarks/memory.py                          # baseline, training step, 2,000 vs 10,000 images
    python benchmarks/memory.py --counts 1000,5000       # shorter streams
    python benchmarks/memory.py --precision fp32         # embed in fp32 (slower; same memory story)

Each case runs in its own Python process, which reports its peak resident set size (``VmHWM``
from ``/proc/self/status``; ``ru_maxrss`` where there is no /proc) when it is done, so one
case's allocations cannot hide another's. Cases:

* ``baseline`` -- import torch and napari_siamforensic, load the model, embed 8 images: the
  fixed cost every job pays;
* ``train`` -- build the training run of the default ``TrainConfig`` at batch 128 (pool of 24
  generated 384 px scenes) and do two steps (``TripletSampler.sample``, forward, backward,
  Adam step), as ``iter_train`` does;
* ``stream N`` -- push N random 128 x 128 float32 images, made one by one by a generator,
  through ``ForensicModel.iter_embed`` (batch 256) and keep only a running sum; the resident
  set is also sampled after every batch, so growth would show as a slope.

The model is ``runs/default/checkpoint.safetensors`` when it exists, else a freshly
initialised network (memory does not depend on the weights' values).
Benchmarks are not tests: nothing here asserts a size or a time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import contention_note, load, machine_line, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "runs" / "default" / "checkpoint.safetensors"


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_mib() -> float:
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kib = r / 1024 if sys.platform == "darwin" else r
    return kib / 1024


def rss_mib() -> float | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024


def _model(precision: str, device: str):
    import torch

    import napari_siamforensic as sf
    from napari_siamforensic.core.model import SiameseNet

    if CHECKPOINT.is_file():
        return sf.load_model(CHECKPOINT, device=device, precision=precision)
    net = SiameseNet()
    net.reset_parameters(torch.Generator().manual_seed(0))
    return sf.ForensicModel(net, device, precision=precision)


def child(args) -> dict:
    """Runs one case in this process; returns the report."""
    import numpy as np

    t0 = time.perf_counter()
    out: dict = {"case": args.case}
    if args.case == "baseline":
        model = _model(args.precision, args.device)
        model.embed([np.random.default_rng(0).random((128, 128), dtype=np.float32) for _ in range(8)])
    elif args.case == "train":
        from _common import make_trainer, train_step, training_pool

        arrays, groups = training_pool()
        tr = make_trainer(arrays, groups, batch_size=128, device=args.device)
        out["precision"] = tr["precision"]
        for _ in range(2):
            train_step(tr)
    elif args.case == "stream":
        model = _model(args.precision, args.device)
        rng = np.random.default_rng(0)

        def images(n):
            for _ in range(n):
                yield rng.random((128, 128), dtype=np.float32)

        total = np.zeros(model.config.embedding_dim, np.float64)
        samples = []
        for rep in model.iter_embed(images(args.count), batch_size=256):
            total += rep.embeddings.sum(axis=0)
            samples.append(rss_mib())
        out.update(count=args.count, batches=len(samples), rss_first_batch=samples[0],
                   rss_last_batch=samples[-1], rss_max_second_half=max(samples[len(samples) // 2:]))
        out["checksum"] = float(total.sum())
    out["peak_mib"] = peak_mib()
    out["seconds"] = time.perf_counter() - t0
    out["load"] = load()
    return out


def run_case(case: str, extra: list[str], args) -> dict:
    cmd = [sys.executable, __file__, "--child", case, "--precision", args.precision, "--device", args.device] + extra
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
    if res.returncode != 0:
        raise SystemExit(f"case {case} {extra} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="2000,10000", help="streamed image counts, comma-separated")
    ap.add_argument("--precision", default="bf16", choices=("fp32", "bf16"),
                    help="precision of the embedding cases (training uses the TrainConfig default, 'auto')")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.child:
        args.case = args.child
        print(json.dumps(child(args)))
        return
    print(machine_line(args.device))
    note = contention_note()
    if note:
        print(note)
    print(f"model: {'runs/default/checkpoint.safetensors' if CHECKPOINT.is_file() else 'freshly initialised'}; "
          f"embedding precision {args.precision}; one process per case; peak = VmHWM")
    rows = []
    r = run_case("baseline", [], args)
    rows.append(["baseline: import, load model, embed 8 images", f"{r['peak_mib']:.0f}", "", f"{r['seconds']:.0f}",
                 r["load"]])
    print("  done:", rows[-1][0], flush=True)
    r = run_case("train", [], args)
    rows.append([f"training, 2 steps at batch 128 ({r.get('precision')}, channels_last)", f"{r['peak_mib']:.0f}", "",
                 f"{r['seconds']:.0f}", r["load"]])
    print("  done:", rows[-1][0], flush=True)
    for count in (int(c) for c in args.counts.split(",")):
        r = run_case("stream", ["--count", str(count)], args)
        rows.append([f"iter_embed, {count:,} images streamed ({args.precision}, batch 256)", f"{r['peak_mib']:.0f}",
                     f"{r['rss_first_batch']:.0f} / {r['rss_max_second_half']:.0f} / {r['rss_last_batch']:.0f}",
                     f"{r['seconds']:.0f}", r["load"]])
        print("  done:", rows[-1][0], flush=True)
    print()
    print(table(rows, ["case", "peak RSS MiB", "RSS after 1st batch / max in 2nd half / last (MiB)", "seconds",
                       "load at the end"]))


if __name__ == "__main__":
    main()
