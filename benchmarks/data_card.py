"""Print the data card of the default training pool as a markdown table (docs/data.md).

Usage::

    python benchmarks/data_card.py                          # print the table
    python benchmarks/data_card.py --update docs/data.md    # rewrite the table in place
    python benchmarks/data_card.py --n-generated 660        # the card of a bigger pool

``--update`` replaces what lies between the ``<!-- data-card:start -->`` and
``<!-- data-card:end -->`` markers and leaves the rest of the page alone.
"""
from __future__ import annotations

import argparse
import sys

from napari_siamforensic.core.pool import pool_card

START, END = "<!-- data-card:start -->", "<!-- data-card:end -->"


def card_markdown(n_generated: int = 220, seed: int = 0, size: int = 512) -> str:
    rows = pool_card(n_generated=n_generated, seed=seed, size=(size, size))
    total_px = sum(r["pixels"] for r in rows)
    n_images = sum(r["count"] for r in rows)
    lines = [
        f"Pool: `default_training_pool(n_generated={n_generated}, seed={seed})` with {size} x {size} "
        f"generated scenes: {n_images} images, {total_px / 1e6:.1f} megapixels.",
        "",
        "| source | licence | credit | images | share of pixels |",
        "|---|---|---|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| `{r['source']}` | {r['licence']} | {r['credit']} | {r['count']} | {100 * r['share']:.2f} % |")
    offline = [r for r in rows if not r["source"].startswith("generated:")]
    share_off = sum(r["share"] for r in offline)
    lines += ["", f"Offline images: {len(offline)} ({100 * share_off:.1f} % of pixels); generated scenes: "
              f"{n_images - len(offline)} ({100 * (1 - share_off):.1f} % of pixels)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Print the training-pool data card as markdown.")
    p.add_argument("--n-generated", type=int, default=220)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--update", metavar="PAGE", help="rewrite the card between the markers in PAGE")
    args = p.parse_args(argv)
    table = card_markdown(args.n_generated, args.seed, args.size)
    if not args.update:
        print(table)
        return 0
    with open(args.update, encoding="utf-8") as fh:
        page = fh.read()
    if START not in page or END not in page:
        print(f"{args.update} has no {START} ... {END} block", file=sys.stderr)
        return 1
    head, rest = page.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(args.update, "w", encoding="utf-8") as fh:
        fh.write(f"{head}{START}\n{table}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
