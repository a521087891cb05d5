"""Event-loop latency of a real napari viewer while our widgets work (run it under Xvfb).

    xvfb-run -a python benchmarks/latency.py                  # 5 s per state
    xvfb-run -a python benchmarks/latency.py --seconds 20 --threads 1

Never with ``QT_QPA_PLATFORM=offscreen`` (napari renders black there, and the timings would not
be those of a real window). A precise 10 ms ``QTimer`` runs on the Qt thread; its lateness
(interval between two ticks minus 10 ms) is how long the viewer could not react to the user.
Three states, one after the other in the same shown viewer:

* ``idle``: nothing runs.
* ``training``: the Train widget trains from scratch on a few small generated images
  (a tiny config: batch 8, 16 validation triplets, CPU) until it is cancelled.
* ``live segment``: the Segment widget with *live* on; a stroke of scribbles is painted
  (through ``Labels.paint``, one paint event per stroke, as a user's stroke) every time the
  previous refit has finished, so refits run back to back for the whole period.

Prints a markdown table (median, p95 and max lateness per state) with the work done in each
state and the 1-minute load average at its end: on a shared machine the spikes follow the load.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each state (default 5)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--size", type=int, default=128, help="side of the generated images (default 128)")
    ap.add_argument("--wait", type=float, default=300,
                    help="longest wait, in s, for a cancelled job to stop (default 300)")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    import napari
    from qtpy.QtCore import Qt, QTimer

    from napari_siamforensic._widgets.segment import SegmentWidget
    from napari_siamforensic._widgets.train import TrainWidget
    from napari_siamforensic.core.synthetic import generate_scene, labelled_scene

    size = (args.size, args.size)
    period_ms = int(args.seconds * 1000)
    viewer = napari.Viewer(show=True)
    for i, kind in enumerate(("nuclei", "cells", "fibres")):
        viewer.add_image(generate_scene(kind, 900_000 + i, size), name=f"train {kind}")
    image, truth = labelled_scene("nuclei", 5_000_300, size)
    truth = truth > 0

    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train")
    train.steps.setValue(1_000_000)
    train.batch.setValue(8)
    train.validation.setValue(16)
    train.device.setCurrentText("cpu")
    train.start_from.setCurrentText("scratch")
    run_dir = tempfile.mkdtemp(prefix="siamforensic-latency-")
    train.checkpoint_dir.setText(run_dir)

    # the Segment widget (and the model it loads) is built before any measurement
    viewer.add_image(image, name="cells", visible=False)
    segment = SegmentWidget(viewer)
    viewer.window.add_dock_widget(segment, name="Segment")
    segment.trees.setValue(50)
    seg = {"widget": segment}

    lateness: list[float] = []
    last = [None]

    def tick():
        now = time.perf_counter()
        if last[0] is not None:
            lateness.append((now - last[0]) * 1000.0 - 10.0)
        last[0] = now

    timer = QTimer()
    timer.setTimerType(Qt.PreciseTimer)
    timer.timeout.connect(tick)

    results = []     # (state, lateness array, work done, load average)

    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    def measure(state: str, work):
        log(f"end of {state}")
        data = np.array(lateness)
        lateness.clear()
        results.append((state, data, work(), os.getloadavg()[0]))

    def after(ms, fn):
        QTimer.singleShot(int(ms), fn)

    # --- the sequence of states --------------------------------------------------------------
    def start():
        lateness.clear()
        last[0] = None
        timer.start(10)
        after(period_ms, start_training)

    def start_training():
        measure("idle", lambda: "-")
        train.layers.set_checked([layer.name for layer in viewer.layers if layer.name.startswith("train ")])
        if not train.start():
            raise SystemExit("the Train widget did not start")
        lateness.clear()
        log("training started")
        after(period_ms, stop_training)

    def stop_training():
        measure("training", lambda: f"{len(train.reports)} steps of batch 8")
        train.cancel()
        wait_for(lambda: not train.runner.busy, start_segment)

    def start_segment():
        for layer in viewer.layers:
            layer.visible = layer.name == "cells"
        w = seg["widget"]
        w.live.setChecked(True)
        w.image.select("cells")
        seg.update(layer=w.new_scribbles(), strokes=0, refits=0)
        w.runner.busy_changed.connect(on_seg_busy)
        lateness.clear()
        log("live segmentation: first stroke")
        stroke()
        after(period_ms, stop_segment)

    def stroke():
        """One stroke per class (one paint event), as a user paints."""
        layer, n = seg["layer"], seg["strokes"]
        rng = np.random.default_rng(n)
        with layer.block_history():
            for cls, mask in ((1, truth), (2, ~truth)):
                ys, xs = np.nonzero(mask)
                for k in rng.choice(ys.size, 20, replace=False):
                    layer.paint((int(ys[k]), int(xs[k])), cls, refresh=False)
        layer.refresh()
        seg["strokes"] = n + 1

    def on_seg_busy(busy):
        log(f"segment runner busy={busy}")
        if not busy and not seg.get("stopped"):
            seg["refits"] += 1
            QTimer.singleShot(0, stroke)

    def stop_segment():
        seg["stopped"] = True
        measure("live segment", lambda: f"{seg['refits']} refits, {seg['strokes']} strokes")
        w = seg["widget"]
        w.live.setChecked(False)
        w.runner.cancel()
        wait_for(lambda: not w.runner.busy, finish)

    def wait_for(cond, then, _t0=None):
        t0 = time.perf_counter() if _t0 is None else _t0
        if cond() or time.perf_counter() - t0 > args.wait:
            log(f"waited {time.perf_counter() - t0:.1f} s for the job to stop")
            then()
        else:
            after(50, lambda: wait_for(cond, then, t0))

    def finish():
        timer.stop()
        print(f"# napari {napari.__version__}, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs, {platform.platform()}")
        print(f"# {args.seconds:g} s per state, images {args.size} px, Segment forest n_jobs="
              f"{seg['widget'].segmenter.n_jobs if seg['widget'].segmenter is not None else '?'}\n")
        print("| state | median lateness | p95 | max | ticks | work done | load avg (1 min) |")
        print("|---|---|---|---|---|---|---|")
        for state, d, work, load in results:
            if d.size:
                print(f"| {state} | {np.median(d):.1f} ms | {np.percentile(d, 95):.1f} ms "
                      f"| {d.max():.0f} ms | {d.size} | {work} | {load:.1f} |")
            else:
                print(f"| {state} | - | - | - | 0 | {work} | {load:.1f} |")
        viewer.close()
        from napari._qt.qt_event_loop import get_qapp
        after(500, get_qapp().quit)

    after(1500, start)      # let the window settle first
    napari.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
