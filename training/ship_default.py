"""Make a training run's exported model the bundled default, keeping the whole training lineage.

    python training/train_default.py --out runs/NEW ... --export runs/NEW/model.safetensors
    python training/ship_default.py runs/NEW/model.safetensors --init "ft8 step 1025" \
        --note "what changed in this run" [--bridge runs/ft8 1002 1025 "ft8 continued ..."]

The bundled model's metadata holds one record per run that led to it (``info["runs"]``: steps,
seconds, last validation accuracy, pool, configuration, where it started from). This appends
the new run's record (written by ``--export`` from the run's log) to the records of the model
now bundled, after any ``--bridge`` records: steps a run took beyond the weights that were
shipped from it, which the new run started from (on the CPU). ``--device`` says where the new
run trained (a GPU run: e.g. "cuda (NVIDIA H200), bf16 autocast"). The result is saved as
float16 with the scoring poses ``dihedral+invert`` and ``--pose-penalty`` (0.2). Recalibrate
afterwards (``training/calibrate_default.py --write``): the calibration belongs to the weights.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import napari_siamforensic as sf
from napari_siamforensic.core.scoring import default_weights_path

CPU_DEVICE = "cpu (2 shared vCPU, AMD EPYC), bf16 autocast"     # every run of the lineage before pN


def log_record(run: Path, first: int, last: int) -> dict:
    """Seconds, last validation accuracy and step count of ``run``'s steps ``first..last``,
    from its log.jsonl (a resumed run appends to the log: the last record of a step wins)."""
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    by_step = {r["step"]: r for r in lines if first <= r["step"] <= last}
    missing = sorted(set(range(first, last + 1)) - set(by_step))
    if missing:
        raise SystemExit(f"{run}/log.jsonl has no record of steps {missing[:5]}{'...' if len(missing) > 5 else ''}")
    evals = [r["acc"] for _, r in sorted(by_step.items()) if r["acc"] is not None]
    return {"steps": len(by_step), "train_seconds": round(sum(r["dt"] for r in by_step.values()), 1),
            "last_validation_accuracy": evals[-1] if evals else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="the run's exported model (train_default.py --export)")
    ap.add_argument("--init", required=True, help="what the run started from, as the lineage should say")
    ap.add_argument("--note", required=True, help="what this run changed")
    ap.add_argument("--bridge", nargs=4, action="append", default=[], metavar=("RUN", "FIRST", "LAST", "NOTE"),
                    help="steps FIRST..LAST of run folder RUN, taken after its shipped weights and before "
                         "the new run started from it")
    ap.add_argument("--device", default=CPU_DEVICE,
                    help="where the new run trained, as the lineage should say (default: %(default)r)")
    ap.add_argument("--pose-penalty", type=float, default=0.2,
                    help="added to every scoring pose but the image's own (default: %(default)s, the bundled "
                         "model's since the fourth session)")
    ap.add_argument("--out", default=str(default_weights_path()), help="where to write (default: the bundled model)")
    args = ap.parse_args()

    runs = list(sf.load_model().info.get("runs", []))
    for run, first, last, note in args.bridge:
        run = Path(run)
        record = log_record(run, int(first), int(last))
        record.update(pool="as the run it continues", init=f"{run.name} step {int(first) - 1}", note=note,
                      config=json.loads((run / "config.json").read_text()))
        runs.append(record)
    new = sf.load_model(args.model)
    if not new.info.get("runs"):
        raise SystemExit(f"{args.model} has no run record: write it with train_default.py --export")
    record = dict(new.info["runs"][-1])
    record.update(init=args.init, note=args.note, device=args.device)
    runs.append(record)
    new.info["runs"] = runs
    # the runs' devices, in lineage order (a record without one predates the GPU runs: the CPU)
    devices = list(dict.fromkeys(r.get("device", CPU_DEVICE) for r in runs))
    new.info["device"] = "; ".join(devices)
    new.poses = "dihedral+invert"
    new.pose_penalty = args.pose_penalty
    new.save(args.out, dtype="float16")
    print(f"wrote {args.out}: {len(runs)} runs, {sum(r['steps'] for r in runs)} steps, "
          f"{round(sum(r['train_seconds'] for r in runs))} s;", [(r["steps"], r["train_seconds"]) for r in runs])


if __name__ == "__main__":
    main()
