"""The pixel check's first pass (``PixelChecker.first_pass``, the screen's ``wider`` filter):
seconds per pair as the sixteenth session computed it and as it is computed since the
seventeenth, on the same pairs in one process.

    python benchmarks/first_pass.py [--items 2000] [--partners 60] [--threads 2] [--repeats 2]

Pairs are screen-like: generated panels (``screen.make_panel``, seeds 7,000,000+, random sizes
128-256 px a side), each with ``--partners`` random others, every pair once (a < b, sorted),
so every item recurs in about twice as many pairs as it has partners, as in a screen's neighbour
lists. Three ways, alternating, best of ``--repeats``:

* **pair by pair** (the sixteenth session's ``first_pass``): blocks of 128 pairs sorted by their
  first item, the coarse stage of a checker with ``coarse_scales=FIRST_PASS_SCALES``
  (``PixelChecker._coarse(rows, a, b)``) on each block (both
  directions; every job computes its image's window sums), in chunks of 16,384 pairs as the
  screen passed them;
* **grouped, in chunks of 16,384** (``first_pass`` since the seventeenth session, given the
  chunks the screen gave it before);
* **grouped, all at once** (what the screen does since the seventeenth session);
* **grouped, all at once, templates kept for 100 items only** (``first_pass_cache=100``: what a
  pair costs when the cache, 16,384 items by default, is far smaller than the corpus, as in a
  screen of 100,000 items).

Prints the milliseconds per pair, the ratios, and the largest difference between the scores
(templates are kept in float16 since the seventeenth session).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line  # noqa: E402
from screen import make_panel  # noqa: E402

CHUNK = 16384


def pair_by_pair(chk, a, b, block: int = 128) -> np.ndarray:
    """The sixteenth session's first pass: the coarse stage of blocks of pairs."""
    out = np.full(len(a), np.nan)
    order = np.lexsort((b, a))
    for s in range(0, len(a), block):
        rows = [int(r) for r in order[s:s + block]
                if chk.thumb(int(a[r])) is not None and chk.thumb(int(b[r])) is not None]
        if rows:
            ab, ba = chk._coarse(rows, a, b)
            fits = ab[6] | ba[6]
            out[np.array(rows)[fits]] = np.maximum(ab[0], ba[0])[fits]
    return out


def chunked(fn, a, b) -> np.ndarray:
    return np.concatenate([fn(a[s:s + CHUNK], b[s:s + CHUNK]) for s in range(0, len(a), CHUNK)] or [np.zeros(0)])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=2000, help="panels")
    p.add_argument("--partners", type=int, default=60, help="random partners per panel")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="runs of each way (the best is printed)")
    args = p.parse_args(argv)
    if args.items < 2 or args.partners < 1 or args.repeats < 1:
        p.error("--items must be >= 2, --partners and --repeats >= 1")
    torch.set_num_threads(args.threads)
    from napari_siamforensic.core.pixels import FIRST_PASS_SCALES, PixelChecker

    rng = np.random.default_rng(5)
    imgs = [make_panel(7_000_000 + i, (int(rng.integers(128, 257)), int(rng.integers(128, 257)))).astype(np.float32)
            for i in range(args.items)]
    a = np.repeat(np.arange(args.items), args.partners)
    b = rng.integers(0, args.items, len(a))
    a, b = a[a != b], b[a != b]
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], 1), axis=0)
    a, b = pairs[:, 0], pairs[:, 1]
    print(machine_line())
    print(f"{len(a):,} pairs of {args.items:,} panels ({2 * len(a) / args.items:.0f} pairs per panel), "
          f"best of {args.repeats}\n")
    ways = {
        "pair by pair, chunks of 16,384 (sixteenth session)": lambda c: chunked(lambda x, y: pair_by_pair(c, x, y), a, b),
        "grouped, chunks of 16,384": lambda c: chunked(c.first_pass, a, b),
        "grouped, all at once (the screen since the seventeenth session)": lambda c: c.first_pass(a, b),
        "grouped, all at once, templates kept for 100 items": lambda c: c.first_pass(a, b),
    }
    caches = {"grouped, all at once, templates kept for 100 items": 100}
    times = {k: [] for k in ways}
    scores = {}
    for _ in range(args.repeats):
        for name, run in ways.items():
            # the pair-by-pair way is the coarse stage at the first pass's sizes
            chk = PixelChecker(imgs.__getitem__, first_pass_cache=caches.get(name, 16384),
                               coarse_scales=FIRST_PASS_SCALES)
            for i in range(len(imgs)):
                chk.thumb(i)                       # thumbnails made before the clock starts
            t = time.perf_counter()
            scores[name] = run(chk)
            times[name].append(time.perf_counter() - t)
    base = min(times[next(iter(ways))])
    print("| first pass | ms per pair | time against pair by pair |")
    print("|---|---:|---:|")
    for name in ways:
        t = min(times[name])
        print(f"| {name} | {1e3 * t / len(a):.3f} | {t / base:.2f}x |")
    ref = scores[next(iter(ways))]
    for name in list(ways)[1:]:
        same_nan = bool(np.array_equal(np.isnan(ref), np.isnan(scores[name])))
        print(f"\n{name}: largest score difference from pair by pair {np.nanmax(np.abs(scores[name] - ref)):.2e}, "
              f"NaN in the same pairs: {same_nan}")


if __name__ == "__main__":
    main()
