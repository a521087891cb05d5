"""Helpers shared by the benchmark scripts: the machine line, load averages, timers.

Every figure a script prints is followed by the load average at the time, because these
machines are shared (a training run in the background halves what a benchmark sees). Compare
figures only with the baseline printed in the same run (ratios), never across runs.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable

import torch


def check_switch(stage: str, on: bool) -> dict:
    """``PixelChecker`` keyword arguments that turn one of the pixel check's stages on or off:
    ``"rotations"``, ``"stretch"``, ``"overlap"``, ``"structure"`` (the line rule) or
    ``"discount"`` (the small-template discount, on at its default area)."""
    if stage == "discount":
        from napari_siamforensic.core.pixels import TEMPLATE_FULL_AREA

        return {"template_full_area": TEMPLATE_FULL_AREA if on else None}
    return {stage: on}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def load() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"load 1.93/1.15/0.54"``."""
    try:
        a, b, c = os.getloadavg()
        return f"load {a:.2f}/{b:.2f}/{c:.2f}"
    except OSError:
        return "load n/a"


def cpu_bf16() -> str:
    """The CPU's native bf16 support as the machine lines name it: ``"avx512_bf16"``,
    ``"amx_bf16"`` or ``"no native bf16"``."""
    flags = cpu_flags()
    return "avx512_bf16" if "avx512_bf16" in flags else ("amx_bf16" if "amx_bf16" in flags else "no native bf16")


def machine_line(device: str = "cpu") -> str:
    """One line naming the machine: CPU model, cores, torch version and threads, bf16 support,
    GPU (when used), date (UTC) and load."""
    parts = [f"CPU {cpu_model()} ({os.cpu_count()} logical cores, {cpu_bf16()})",
             f"torch {torch.__version__} ({torch.get_num_threads()} threads)"]
    if str(device).startswith("cuda") and torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    parts.append(_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    parts.append(load())
    return "machine: " + "; ".join(parts)


def sync(device) -> None:
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def timed(fn: Callable[[], object], *, repeats: int = 3, warmup: int = 1, device="cpu") -> dict:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; seconds per call.

    Returns ``{"median": s, "min": s, "cpu": s, "runs": [s, ...], "load": str}``; ``cpu`` is the
    median process CPU time per call (all threads; with one thread it is the load-robust
    figure, since waiting for a busy core does not count). On a shared machine the minimum wall
    time is the better estimate of what the code costs, the median of what a user sees.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    runs, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        runs.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return {"median": statistics.median(runs), "min": min(runs), "cpu": statistics.median(cpus),
            "runs": runs, "load": load()}


def contention_note() -> str | None:
    """A warning line when other processes keep the cores busy (load above the core count)."""
    try:
        one = os.getloadavg()[0]
    except OSError:
        return None
    cores = os.cpu_count() or 1
    if one > cores:
        return (f"NOTE: load {one:.1f} on {cores} cores: other processes compete for the CPU, so wall "
                f"times are inflated and multi-threaded torch suffers most (threads wait for each "
                f"other); compare only ratios within this run, and prefer --threads 1 and the CPU-second "
                f"columns.")
    return None


def set_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(int(n))


def table(rows: list[list], header: list[str]) -> str:
    """A GitHub-markdown table (so a run's output can be pasted into docs/benchmarks.md)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])


# --------------------------------------------------------------------------- training helpers
# The same code path as napari_siamforensic.core.train.iter_train, with a timer per phase.

def scenes(n: int, seed: int = 0, size: int = 256) -> list[tuple[str, "np.ndarray"]]:
    """``n`` generated scenes (kinds in turn, seeds ``seed + i``), as ``generate_scenes`` makes
    them; a seed whose generator fails is skipped and the next one taken, so a bug in one
    scene kind does not stop a benchmark (the skipped seeds are printed)."""
    from napari_siamforensic.core.synthetic import SCENE_KINDS, generate_scene

    out, i = [], 0
    while len(out) < n:
        kind = SCENE_KINDS[i % len(SCENE_KINDS)]
        try:
            out.append((kind, generate_scene(kind, seed + i, (size, size))))
        except Exception as exc:
            print(f"(skipped generated scene {kind} seed {seed + i}: {type(exc).__name__}: {exc})")
        i += 1
    return out


def training_pool(n: int = 24, size: int = 384, seed: int = 0):
    """``n`` generated scenes (training seeds) as (arrays, groups) for a TripletSampler."""
    pool = scenes(n, seed=seed, size=size)
    return [im for _, im in pool], [kind for kind, _ in pool]


def make_trainer(arrays, groups, *, batch_size: int = 64, precision: str = "auto",
                 channels_last: bool = True, device: str = "cpu", seed: int = 0):
    """Everything one training step needs, built as ``iter_train`` builds it.

    Returns a dict with ``config, net, optimizer, sampler, generator, autocast, device``.
    """
    from contextlib import nullcontext

    from napari_siamforensic import TrainConfig
    from napari_siamforensic.core.devices import make_generator, resolve_device, resolve_precision
    from napari_siamforensic.core.model import SiameseNet
    from napari_siamforensic.core.train import TripletSampler, _make_optimizer

    config = TrainConfig(batch_size=batch_size, precision=precision, channels_last=channels_last,
                         device=device, seed=seed, validation_triplets=0)
    dev = resolve_device(config.device)
    dtype = resolve_precision(config.precision, dev)
    g = make_generator(config.seed)
    net = SiameseNet(config.model)
    net.reset_parameters(g)
    net = net.to(dev)
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()

    def autocast():
        return nullcontext() if dtype is None else torch.autocast(device_type=dev.type, dtype=dtype)

    return {"config": config, "net": net, "optimizer": _make_optimizer(net, config),
            "sampler": TripletSampler(arrays, groups, config, dev), "generator": g,
            "autocast": autocast, "device": dev,
            "precision": "fp32" if dtype is None else str(dtype).replace("torch.", "")}


def train_step(tr: dict, batch=None) -> dict:
    """One training step as ``iter_train`` does it; seconds per phase and the loss.

    ``batch``: a fixed ``(anchor, same, different)`` to train on (then ``sample`` is 0).
    Phases: ``sample`` (patches, deformations, clutter), ``forward`` (three branch passes,
    metric, loss), ``backward`` (zero_grad + backward), ``optimiser`` (step); wall seconds under
    these names and process CPU seconds under ``<name>_cpu`` (``total`` and ``cpu`` for the step).
    """
    from napari_siamforensic.core.model import triplet_loss

    cfg, net, opt, dev = tr["config"], tr["net"], tr["optimizer"], tr["device"]
    marks = [(time.perf_counter(), time.process_time())]

    def mark():
        sync(dev)
        marks.append((time.perf_counter(), time.process_time()))

    from torch.profiler import record_function   # labels for --profile; free otherwise

    if batch is None:
        batch = tr["sampler"].sample(cfg.batch_size, tr["generator"])
    mark()
    with record_function("forward"):
        anchor, same, different = batch
        if cfg.channels_last:
            anchor, same, different = (t.contiguous(memory_format=torch.channels_last) for t in (anchor, same, different))
        with tr["autocast"]():
            ea, es, ed = net(anchor), net(same), net(different)
        loss = triplet_loss(net.metric(ea, es), net.metric(ea, ed))
    mark()
    with record_function("backward"):
        opt.zero_grad(set_to_none=True)
        loss.backward()
    mark()
    with record_function("optimiser"):
        opt.step()
    value = float(loss.detach())
    mark()
    out = {"loss": value}
    for i, name in enumerate(("sample", "forward", "backward", "optimiser")):
        out[name] = marks[i + 1][0] - marks[i][0]
        out[name + "_cpu"] = marks[i + 1][1] - marks[i][1]
    out["total"] = marks[-1][0] - marks[0][0]
    out["cpu"] = marks[-1][1] - marks[0][1]
    return out


def median_phases(steps: list[dict]) -> dict:
    keys = ("sample", "forward", "backward", "optimiser", "total", "cpu",
            "sample_cpu", "forward_cpu", "backward_cpu", "optimiser_cpu")
    return {k: statistics.median(s[k] for s in steps) for k in keys}


def matmul_peak(dtype=torch.float32, n: int = 1024, repeats: int = 5, device="cpu") -> dict:
    """GFLOP/s of an ``n x n`` matrix product, best of ``repeats``: the in-run reference for what
    these cores can do. ``{"wall": GFLOP per second, "cpu": GFLOP per process CPU second}``;
    the CPU figure does not count time spent waiting for a core another process holds."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    sync(device)
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        sync(device)
        best, best_cpu = min(best, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
    flop = 2 * n ** 3 / 1e9
    return {"wall": flop / best, "cpu": flop / max(best_cpu, 1e-9)}


def forward_flops(net: torch.nn.Module, input_size: int = 128) -> dict:
    """FLOPs of one forward pass of one image, counting conv and linear multiply-adds x 2.

    Returns ``{"hooks": flops, "flop_counter": flops or None, "per_layer": [(name, flops)]}``;
    ``flop_counter`` is torch.utils.flop_counter's count of the same pass (a cross-check).
    """
    per_layer = []

    def hook(name):
        def fn(mod, inputs, output):
            if isinstance(mod, torch.nn.Conv2d):
                k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
                per_layer.append((name, 2 * output[0].numel() * k))
            else:
                per_layer.append((name, 2 * mod.in_features * mod.out_features))
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in net.named_modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    dev = next(net.parameters()).device
    x = torch.rand(2, 1, input_size, input_size, device=dev)
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    counted = None
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            net(x[:1])
        counted = fc.get_total_flops()
    except Exception:
        pass
    net.train(was)
    return {"hooks": sum(f for _, f in per_layer), "flop_counter": counted, "per_layer": per_layer}


class PeakRSS:
    """Samples this process's resident memory in a thread; ``peak`` in bytes."""

    def __init__(self, interval=0.05):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.start = self.proc.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
