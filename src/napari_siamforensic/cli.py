"""The ``siamforensic`` command: train, score, pairwise, screen, segment, evaluate, sheet, demo.

Every subcommand is a thin shell around library calls (``napari_siamforensic`` and its
``core`` / ``evaluation`` packages). Bad input ends with exit code 2 and one line
``siamforensic: error: ...`` on stderr, never a traceback; Ctrl-C during training keeps the
last checkpoint and exits with 130.

Exit codes: 0 success, 1 the work failed (e.g. the loss diverged), 2 bad input, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

PROG = "siamforensic"
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
MODEL_NAME = "model.safetensors"
CHECKPOINT_NAME = "checkpoint.safetensors"   # as written by core.train


class CliError(ValueError):
    """Bad command-line input found by the CLI itself (reported like the library's ValueErrors)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit code 2). Options must be
    spelled out (no abbreviations), so what was given explicitly can be told from ``argv``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):  # noqa: D401 - argparse API
        sub = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        hint = f"see '{PROG} {sub} --help'" if sub else f"see '{PROG} --help'"
        self.exit(EXIT_BAD_INPUT, f"{PROG}: error: {_one_line(message)} ({hint})\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: ...)" for options that have a value; not for flags or unset options."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=34, width=100)

    def _get_help_string(self, action):
        if action.nargs == 0 or action.default is None or action.default is argparse.SUPPRESS:
            return action.help
        if isinstance(action.default, list):
            return f"{action.help} (default: {' '.join(map(str, action.default))})"
        return super()._get_help_string(action)


def _one_line(message) -> str:
    return " ".join(str(message).split())


# --------------------------------------------------------------------------------------------
# option types
# --------------------------------------------------------------------------------------------

def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    parse.__name__ = f"int>={minimum}"
    return parse


def _float_in(low: float, high: float, what: str):
    """An argparse type: a float within [low, high]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} in [{low:g}, {high:g}], got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what} in [{low:g}, {high:g}], got {value}")
        return value
    parse.__name__ = what
    return parse


_probability = _float_in(0.0, 1.0, "a probability")
_pose_penalty = _float_in(0.0, 10.0, "a number")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


POSES = ("none", "dihedral", "dihedral+invert")
PRESETS = ("default", "paper", "geometric")

# DeformConfig fields -> (option stem, help). Families have a probability ``p_<name>``.
_FAMILY_HELP = {
    "none": "probability that the 'same' partner is not deformed at all",
    "reflect": "mirror left-right and/or up-down",
    "rot90": "quarter turns (90, 180 or 270 degrees)",
    "perspective": "perspective warp (each corner moved by up to --perspective-px)",
    "similarity": "rotation, scaling and translation (--rotation-deg, --scale, --translate-px)",
    "crop": "crop a part (--crop-fraction of the side) and scale it back up",
    "jpeg": "JPEG compression (--jpeg-quality)",
    "gamma": "gamma change (--gamma)",
    "levels": "levels / contrast stretch (--levels-black, --levels-white)",
    "local_edit": "erase a disc or brighten it (--edit-radius, --edit-multiply)",
    "invert": "intensity inversion",
    "noise": "Gaussian noise (--noise-sigma)",
    "blur": "Gaussian blur (--blur-sigma)",
    "text": "clutter: random text, drawn on all three images of a triplet",
    "box": "clutter: a rectangle outline, on all three images",
    "scalebar": "clutter: a scale bar near a corner, on all three images",
    "stretch": "anisotropic scaling, as a non-square crop squashed to a square (--stretch)",
    "erase": "clutter: 1-3 rectangles filled black, white or gray (--erase-area), on all three images",
}
_RANGE_HELP = {
    "perspective_px": "largest corner move of the perspective warp, px of the source patch",
    "rotation_deg": "rotation range of the similarity move, degrees",
    "scale": "scale range of the similarity move (log-uniform)",
    "translate_px": "largest translation of the similarity move, px",
    "crop_fraction": "side of the kept part of a crop, relative to the output",
    "stretch": "width / height ratio range of an anisotropic scaling (log-uniform)",
    "erase_area": "area range of each erased rectangle, relative to the image",
    "jpeg_quality": "JPEG quality range",
    "gamma": "gamma range (log-uniform)",
    "levels_black": "input black point range of a levels change",
    "levels_white": "input white point range of a levels change",
    "edit_radius": "radius of an edited disc, relative to the side",
    "edit_ramp_px": "width of the soft edge of an edited disc, px",
    "edit_multiply": "brightening factor of an edited disc",
    "noise_sigma": "standard deviation range of the noise (intensities in [0, 1])",
    "blur_sigma": "sigma range of the blur, px",
}
_DEFORM_DEST = "deform__"


def _add_deform_options(parser: argparse.ArgumentParser) -> None:
    """--deform-preset, then per family --p-FAMILY P / --no-FAMILY, then the ranges.

    Each is stored as ``deform__<field>`` only when given (default SUPPRESS), so the preset
    (or, when resuming, the checkpoint's configuration) supplies everything else.
    """
    from .core.config import DeformConfig

    base = DeformConfig()
    group = parser.add_argument_group(
        "deformations (how the 'same' partner is made; defaults shown are the 'default' preset's)")
    group.add_argument("--deform-preset", choices=PRESETS, default="default",
                       help="starting point for the options below: 'default' = the paper's deformations "
                            "plus 90-degree turns, inversion, wider scales, crops, levels, noise, blur and "
                            "scale bars; 'paper' = the authors' version-2 deformations only; 'geometric' = "
                            "SN[G], geometric moves only")
    for f in fields(DeformConfig):
        if not f.name.startswith("p_"):
            continue
        family = f.name[2:]
        stem = family.replace("_", "-")
        default = getattr(base, f.name)
        if family == "none":
            group.add_argument("--p-none", dest=_DEFORM_DEST + f.name, type=_probability,
                               default=argparse.SUPPRESS, metavar="P",
                               help=f"{_FAMILY_HELP['none']} (preset default: {default})")
            continue
        what = _FAMILY_HELP.get(family, family.replace("_", " "))
        excl = group.add_mutually_exclusive_group()
        excl.add_argument(f"--p-{stem}", dest=_DEFORM_DEST + f.name, type=_probability,
                          default=argparse.SUPPRESS, metavar="P",
                          help=f"{what}: probability (preset default: {default})")
        excl.add_argument(f"--no-{stem}", dest=_DEFORM_DEST + f.name, action="store_const", const=0.0,
                          default=argparse.SUPPRESS, help=f"{what}: switch off (same as --p-{stem} 0)")
    for f in fields(DeformConfig):
        if f.name.startswith("p_"):
            continue
        default = getattr(base, f.name)
        what = _RANGE_HELP.get(f.name, f.name.replace("_", " "))
        opt = "--" + f.name.replace("_", "-")
        if isinstance(default, tuple):
            group.add_argument(opt, dest=_DEFORM_DEST + f.name, type=float, nargs=2, metavar=("LOW", "HIGH"),
                               default=argparse.SUPPRESS,
                               help=f"{what} (preset default: {default[0]:g} {default[1]:g})")
        else:
            group.add_argument(opt, dest=_DEFORM_DEST + f.name, type=float, metavar="X",
                               default=argparse.SUPPRESS, help=f"{what} (preset default: {default:g})")


def _preset(name: str):
    from .core.config import DeformConfig

    return {"default": DeformConfig, "paper": DeformConfig.paper, "geometric": DeformConfig.geometric_only}[name]()


def _deform_overrides(args) -> dict:
    out = {}
    for key, value in vars(args).items():
        if key.startswith(_DEFORM_DEST):
            out[key[len(_DEFORM_DEST):]] = tuple(value) if isinstance(value, list) else value
    return out


def _deform_config(args, base=None):
    """The DeformConfig the options describe, starting from ``base`` (a checkpoint's) when the
    preset was left at 'default'. Range errors come from DeformConfig as ValueErrors."""
    overrides = _deform_overrides(args)
    if base is None or args.deform_preset != "default":
        base = _preset(args.deform_preset)
    return base.replace(**overrides) if overrides else base


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------

def _collect_images(items) -> list[tuple[str, "object"]]:
    """Image files and folders (searched recursively) -> [(path, 2D float32 array)], in order."""
    from .core.data import IMAGE_SUFFIXES, list_image_files, read_image

    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files = list_image_files(p)
            if not files:
                raise CliError(f"folder {item!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            out.extend((str(f), read_image(f)) for f in files)
        elif p.exists():
            out.append((str(p), read_image(p)))
        else:
            raise CliError(f"no such file or folder: {item!r}")
    return out


def _check_sources_exist(items) -> None:
    for item in items:
        if not Path(item).exists():
            raise CliError(f"no such file or folder: {item!r}")


def _short_names(paths: list[str]) -> list[str]:
    """Paths relative to their common folder (just the file names when they are unique)."""
    names = [Path(p).name for p in paths]
    if len(set(names)) == len(names):
        return names
    try:
        root = os.path.commonpath([str(Path(p).resolve().parent) for p in paths])
        return [os.path.relpath(str(Path(p).resolve()), root) for p in paths]
    except ValueError:
        return list(paths)


def _load_model(path, device: str, precision: str = "fp32", pose_penalty: float | None = None,
                pixels: bool = True):
    """``--model`` may be a model file, a checkpoint, or a training output folder (its
    model.safetensors, else its checkpoint.safetensors); None is the bundled default model.
    ``pose_penalty`` None keeps the model file's own; ``pixels=False`` drops its pixel check."""
    from .core.scoring import load_model

    if path is not None and Path(path).is_dir():
        for name in (MODEL_NAME, CHECKPOINT_NAME):
            if (Path(path) / name).is_file():
                path = str(Path(path) / name)
                break
        else:
            raise CliError(f"--model: folder {path!r} holds neither {MODEL_NAME} nor {CHECKPOINT_NAME}")
    try:
        model = load_model(path, device=device, precision=precision, pose_penalty=pose_penalty)
        if not pixels:
            model.pixel_check = None
        return model
    except ValueError as exc:
        if path is None:
            raise CliError(f"{exc}; pass --model PATH (a model.safetensors written by '{PROG} train')") from None
        raise


def _format_matrix(matrix, names: list[str]) -> str:
    """``(N, N)`` distances as text: numbered columns, rows ``i name``."""
    n = len(names)
    width = max(6, len(str(n - 1)) + 1)
    name_w = min(40, max(len(s) for s in names))
    head = " " * (len(str(n - 1)) + 1 + name_w + 1) + "".join(f"{j:>{width + 1}}" for j in range(n))
    lines = [head]
    for i in range(n):
        label = names[i] if len(names[i]) <= name_w else "..." + names[i][-(name_w - 3):]
        cells = "".join(f"{matrix[i, j]:>{width + 1}.3f}" for j in range(n))
        lines.append(f"{i:>{len(str(n - 1))}} {label:<{name_w}} {cells}")
    return "\n".join(lines)


def _flagged_pairs(matrix, threshold: float) -> list[tuple[int, int, float]]:
    n = matrix.shape[0]
    pairs = [(i, j, float(matrix[i, j])) for i in range(n) for j in range(i + 1, n) if matrix[i, j] <= threshold]
    return sorted(pairs, key=lambda t: t[2])


def _add_model_options(p: argparse.ArgumentParser, *, poses_default: str = "dihedral") -> None:
    p.add_argument("--model", metavar="PATH", default=None,
                   help="model file (.safetensors from 'siamforensic train'), a training checkpoint, or a "
                        "'train --out' folder; default: the bundled default model")
    p.add_argument("--poses", choices=POSES, default=poses_default,
                   help="compare with these poses of the second image and keep the smallest distance: "
                        "'none' = the paper's raw f; 'dihedral' = the 8 rotations/mirrorings; "
                        "'dihedral+invert' = those and their intensity inversions (16)")
    p.add_argument("--pose-penalty", metavar="X", type=_pose_penalty, default=None,
                   help="added to the distance in every pose but the image's own before the smallest is "
                        "kept (0 = the plain minimum); default: the model file's value (the bundled "
                        "model: 0.2)")
    p.add_argument("--no-pixels", action="store_true",
                   help="leave the pixel check out of the distance: the bundled model adds the best "
                        "correlation of the two images' pixels over flips, turns and crops to f "
                        "(docs/model-card.md); with this the distance is f over the poses alone")
    p.add_argument("--device", metavar="DEVICE", default="auto",
                   help="'auto' (CUDA, then Apple MPS, then CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'")
    p.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                   help="arithmetic of inference: 'bf16' is several times faster on GPUs and CPUs with "
                        "AVX512-BF16 and slightly less exact; 'auto' uses bf16 where it is fast")


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------

# TrainConfig field -> CLI dest, for options that map one to one.
_TRAIN_FIELDS = {
    "steps": "steps", "batch_size": "batch_size", "lr": "lr", "optimizer": "optimizer",
    "momentum": "momentum", "weight_decay": "weight_decay", "seed": "seed", "device": "device",
    "precision": "precision", "channels_last": "channels_last", "patch_size": "patch_size",
    "hard_negative_fraction": "hard_negatives", "p_deform_negative": "deform_negatives",
    "negative_poses": "negative_poses", "validation_triplets": "validation_triplets", "eval_every": "eval_every",
    "checkpoint_every": "checkpoint_every",
}


def _add_train_parser(sub) -> None:
    from .core.config import OPTIMIZERS, PRECISIONS, TrainConfig

    d = TrainConfig()
    p = sub.add_parser(
        "train", formatter_class=_Formatter,
        help="train the network on your images (checkpoints, resume)",
        description="Train the siamese network on image files and folders (searched recursively), with "
                    "the synthetic manipulations generated on the fly. Writes OUT/checkpoint.safetensors "
                    "every --checkpoint-every steps (atomically) and OUT/model.safetensors at the end. "
                    "Ctrl-C stops cleanly, keeps the checkpoint and exits with code 130; --resume "
                    "continues from it.")
    p.add_argument("images", nargs="+", metavar="IMAGES",
                   help="training images: files and/or folders (hard negatives come from the same image)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for the checkpoint and the model")
    p.add_argument("--steps", metavar="N", type=_int_at_least(1), default=d.steps,
                   help="optimiser steps in total (when resuming: the new total)")
    p.add_argument("--batch-size", metavar="N", type=_int_at_least(2), default=d.batch_size, help="triplets per step")
    p.add_argument("--lr", metavar="LR", type=_positive_float, default=d.lr, help="learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer,
                   help="'sgd' uses --momentum (the paper: sgd, momentum 0.9, lr 1e-5)")
    p.add_argument("--momentum", metavar="M", type=float, default=d.momentum, help="momentum of sgd")
    p.add_argument("--weight-decay", metavar="W", type=float, default=d.weight_decay, help="weight decay")
    p.add_argument("--seed", metavar="N", type=_int_at_least(0), default=d.seed,
                   help="random seed of initialisation, patches and deformations (same seed, same run)")
    p.add_argument("--device", metavar="DEVICE", default=d.device,
                   help="'auto' (CUDA, then Apple MPS, then CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="'auto' = bf16 autocast where the device runs it fast (CUDA, CPUs with AVX512-BF16), "
                        "fp32 elsewhere")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep tensors in the default memory layout (channels_last is usually faster)")
    p.add_argument("--patch-size", metavar="N", type=_int_at_least(16), default=d.patch_size,
                   help="side of the source patches cut from the images, px (the net sees 128 px crops)")
    p.add_argument("--hard-negatives", type=_probability, default=d.hard_negative_fraction, metavar="FRACTION",
                   help="share of 'different' images cut from another region of the anchor's own image")
    p.add_argument("--deform-negatives", type=_probability, default=d.p_deform_negative, metavar="P",
                   help="probability that the 'different' image is deformed too (so deformation is no cue)")
    p.add_argument("--negative-poses", choices=POSES, default=d.negative_poses,
                   help="train each 'different' image in its pose closest to the anchor, out of these poses "
                        "(match the poses the model is scored with; 'dihedral+invert' costs 3-4x "
                        "the step time on a CPU)")
    p.add_argument("--validation-triplets", metavar="N", type=_int_at_least(0), default=d.validation_triplets,
                   help="fixed validation triplets for the accuracy shown (0: no validation)")
    p.add_argument("--eval-every", metavar="N", type=_int_at_least(1), default=d.eval_every,
                   help="measure validation triplet accuracy every N steps (and at the end)")
    p.add_argument("--checkpoint-every", metavar="N", type=_int_at_least(1), default=d.checkpoint_every,
                   help="write OUT/checkpoint.safetensors every N steps (and at the end)")
    p.add_argument("--resume", metavar="CKPT", default=None,
                   help="continue the run of this checkpoint.safetensors (or of the folder holding it) with "
                        "its configuration; only --steps and --out may change")
    p.add_argument("--init", metavar="MODEL", default=None,
                   help="start from the weights of this model file (fine-tuning) instead of a fresh initialisation")
    p.add_argument("--overwrite", action="store_true",
                   help="allow starting a new run in a folder that already holds a checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_deform_options(p)
    p.set_defaults(func=_cmd_train)


def _option_of(dest: str) -> str:
    return "--no-channels-last" if dest == "channels_last" else "--" + dest.replace("_", "-")


def _explicit_train_values(args) -> dict:
    """TrainConfig fields whose option was given on the command line (what the user asked for)."""
    argv = getattr(args, "argv", None) or []
    out = {}
    for field_name, dest in _TRAIN_FIELDS.items():
        opt = _option_of(dest)
        if any(tok == opt or tok.startswith(opt + "=") for tok in argv):
            out[field_name] = getattr(args, dest)
    return out


def _checkpoint_step(path: Path) -> int | None:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return int((f.metadata() or {}).get("step"))
    except Exception:
        return None


def _sigterm_as_ctrl_c():
    """Make SIGTERM (``kill``, a batch scheduler's time limit) stop training like Ctrl-C, so the
    checkpoint of the last finished step is written. Returns the handler to restore, or None
    where signals cannot be set (not the main thread)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, interrupt)


def _restore_sigterm(previous) -> None:
    if previous is not None:
        import signal

        signal.signal(signal.SIGTERM, previous)


def _cmd_train(args) -> int:
    from .core.config import TrainConfig
    from .core.io import load_checkpoint
    from .core.train import iter_train

    _check_sources_exist(args.images)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {args.out!r} exists and is not a folder")
    resume = None
    started = time.time()
    if args.resume is not None:
        resume = Path(args.resume)
        if resume.is_dir():
            resume = resume / CHECKPOINT_NAME
        if not resume.is_file():
            raise CliError(f"--resume: no such checkpoint file {str(resume)!r}")
        if args.init is not None:
            raise CliError("--resume and --init exclude each other: a resumed run already has its weights")
        base = load_checkpoint(resume)["config"]
        # the checkpoint's configuration, changed only where an option was given explicitly
        # (iter_train refuses changes other than --steps and --out, saying so)
        changes = _explicit_train_values(args)
        config = base.replace(deform=_deform_config(args, base.deform), checkpoint_dir=str(out), **changes)
    else:
        if (out / CHECKPOINT_NAME).exists() and not args.overwrite:
            raise CliError(f"{str(out / CHECKPOINT_NAME)!r} already exists; pass --resume {str(out)!r} to "
                           "continue that run or --overwrite to start a new one there")
        changes = {k: getattr(args, dest) for k, dest in _TRAIN_FIELDS.items()}
        config = TrainConfig(deform=_deform_config(args), checkpoint_dir=str(out), **changes)

    from tqdm import tqdm

    ckpt_path = out / CHECKPOINT_NAME
    gen = iter_train(list(args.images), config, init=args.init, resume=resume)
    bar = None
    last = None
    accuracy = None
    recent: list[float] = []
    previous_sigterm = _sigterm_as_ctrl_c()
    try:
        for report in gen:
            if bar is None:
                bar = tqdm(total=report.steps, initial=report.step - 1, unit="step", desc="training",
                           disable=args.no_progress, dynamic_ncols=True, file=sys.stderr)
            bar.update(report.step - bar.n)
            recent = (recent + [report.loss])[-20:]
            if report.triplet_accuracy is not None:
                accuracy = report.triplet_accuracy
            post = {"loss": f"{sum(recent) / len(recent):.4f}"}
            if accuracy is not None:
                post["val_acc"] = f"{accuracy:.3f}"
            post["triplets/s"] = f"{report.triplets_per_second:.0f}"
            bar.set_postfix(post, refresh=False)
            last = report
    except KeyboardInterrupt:
        gen.close()          # between steps: the generator writes its checkpoint now
        if bar is not None:
            bar.close()
        ours = ckpt_path.is_file() and (resume is not None or ckpt_path.stat().st_mtime >= started - 1)
        step = _checkpoint_step(ckpt_path) if ours else None
        if step is not None:
            print(f"{PROG}: interrupted; checkpoint kept at step {step}: {ckpt_path} "
                  f"(continue with: {PROG} train ... --out {out} --resume {ckpt_path})", file=sys.stderr)
        else:
            print(f"{PROG}: interrupted before the first step; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        _restore_sigterm(previous_sigterm)
        if bar is not None:
            bar.close()
    assert last is not None and last.model is not None
    model_path = last.model.save(out / MODEL_NAME)
    acc = f"; validation triplet accuracy {accuracy:.3f}" if accuracy is not None else ""
    print(f"trained to step {last.step} in {last.seconds:.0f} s{acc}")
    print(f"model: {model_path}")
    print(f"checkpoint: {ckpt_path}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# score, pairwise
# --------------------------------------------------------------------------------------------

def _add_score_parser(sub) -> None:
    p = sub.add_parser(
        "score", formatter_class=_Formatter, help="score a pair of images: distance, probability, verdict",
        description="Is image B a manipulated copy of image A? Prints the forensic distance (f over the "
                    "poses, with the pixel check where the model has one: the bundled model does), the "
                    "'same' probability (the model's calibrated sigmoid(scale * (1 - distance) + offset); "
                    "sigmoid(1 - f) for an uncalibrated model) and the verdict: 'duplicate' when the "
                    "distance is <= 1.")
    p.add_argument("image_a", metavar="A", help="first image file")
    p.add_argument("image_b", metavar="B", help="second image file")
    _add_model_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=_cmd_score)


def _cmd_score(args) -> int:
    for name in (args.image_a, args.image_b):
        if Path(name).is_dir():
            raise CliError(f"{name!r} is a folder; 'score' takes two image files "
                           f"(use '{PROG} pairwise' for folders)")
    (path_a, a), (path_b, b) = _collect_images([args.image_a, args.image_b])
    model = _load_model(args.model, args.device, args.precision, args.pose_penalty, not args.no_pixels)
    f = float(model.distance([a], [b], poses=args.poses)[0])
    prob = float(model.probability_from_distance(f))
    verdict = "duplicate" if f <= 1.0 else "different"
    if args.json:
        print(json.dumps({"a": path_a, "b": path_b, "distance": f, "probability": prob, "verdict": verdict,
                          "poses": args.poses}))
    else:
        print(f"a            {path_a}")
        print(f"b            {path_b}")
        print(f"distance     {f:.4f}   ({_distance_words(model, args.poses)}; <= 1 means duplicate)")
        scale, offset = model.calibration
        print(f"probability  {prob:.4f}   (sigmoid({scale:.4g} * (1 - distance) {offset:+.4g}))")
        print(f"verdict      {verdict}")
    return EXIT_OK


def _distance_words(model, poses: str) -> str:
    """What ``model.distance(..., poses=poses)`` is, in words."""
    if poses == "none":
        return "the paper's raw f"
    words = f"f over the poses '{poses}'"
    if model.pixel_check is not None:
        words += " with the pixel check"
    return words


def _add_pairwise_parser(sub) -> None:
    p = sub.add_parser(
        "pairwise", formatter_class=_Formatter, help="the matrix of distances over many images",
        description="Computes the forensic distance between every two images (files and folders, "
                    "searched recursively), prints the matrix and the pairs flagged as duplicates "
                    "(distance <= --threshold), and optionally writes the matrix as CSV.")
    p.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDERS", help="image files and/or folders")
    _add_model_options(p)
    p.add_argument("--threshold", metavar="F", type=float, default=1.0, help="flag pairs with a distance <= this (the paper's 1)")
    p.add_argument("--csv", metavar="OUT", default=None, help="write the matrix to this CSV file (paths as labels)")
    p.add_argument("--no-matrix", action="store_true", help="print only the flagged pairs, not the matrix")
    p.set_defaults(func=_cmd_pairwise)


def _cmd_pairwise(args) -> int:
    items = _collect_images(args.images)
    if len(items) < 2:
        raise CliError(f"'pairwise' needs at least 2 images, got {len(items)}")
    model = _load_model(args.model, args.device, args.precision, args.pose_penalty, not args.no_pixels)
    paths = [p for p, _ in items]
    matrix = model.pairwise([im for _, im in items], poses=args.poses)
    names = _short_names(paths)
    if args.csv:
        import pandas as pd

        out = Path(args.csv)
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(matrix, index=paths, columns=paths).to_csv(out, float_format="%.6g")
    if not args.no_matrix:
        print(f"distance between {len(items)} images ({_distance_words(model, args.poses)}; <= {args.threshold:g} "
              "means duplicate):")
        print(_format_matrix(matrix, names))
        print()
    flagged = _flagged_pairs(matrix, args.threshold)
    print(f"pairs flagged as duplicates (distance <= {args.threshold:g}): {len(flagged)}")
    for i, j, f in flagged:
        print(f"  {names[i]}  <->  {names[j]}   distance={f:.3f}  p={float(model.probability_from_distance(f)):.3f}")
    if args.csv:
        print(f"matrix written to {args.csv}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# screen
# --------------------------------------------------------------------------------------------

SCREEN_MODES = ("all", "within", "across")
PDF_PAGES = ("auto", "always", "never")


def _add_screen_parser(sub) -> None:
    p = sub.add_parser(
        "screen", formatter_class=_Formatter,
        help="screen figures, PDFs and folders for duplicates: HTML, CSV and JSON report",
        description="Screens image files, PDFs and folders (searched recursively; multi-panel figures "
                    "cut into panels) for duplicated images: embeds every item in every pose, finds "
                    "--candidates nearest neighbours per item, re-scores them with the distance (f with the "
                    "pixel check fused in, as `score` gives it) and localises the best pairs. "
                    "Writes OUT/report.html (a self-contained page), "
                    "OUT/pairs.csv and OUT/report.json, and prints the best pairs. Unreadable inputs are "
                    "skipped with a reason, never stop the screen. With --scheduler the reading and "
                    "embedding run on a dask.distributed cluster.")
    p.add_argument("sources", nargs="+", metavar="SOURCES",
                   help="image files (PNG, JPEG, TIFF incl. multi-page and 16-bit, ...), PDFs and/or folders")
    _add_model_options(p, poses_default="dihedral+invert")
    p.set_defaults(precision="auto")        # as sf.screen: bf16 where it is fast
    p.add_argument("--out", metavar="DIR", default="screen-report",
                   help="folder for report.html, pairs.csv and report.json (created)")
    p.add_argument("--candidates", metavar="N", type=_int_at_least(1), default=10,
                   help="nearest neighbours kept per item (their union is re-scored); more find more copies, "
                        "at about 2-2.5 ms of pixel check per extra pair on 2 CPU cores")
    p.add_argument("--wider", metavar="N", type=_int_at_least(0), default=None,
                   help="search N neighbours more per item and keep those pairs only where the pixel check's "
                        "first pass (its 32 px stage alone: about 0.25 ms per pair in a screen on 2 CPU cores, "
                        "under a sixth of the full check's time) finds them alike; finds copies the embedding ranks "
                        "far away. Default: 90 (0 with --no-verify); --wider 0 turns it off")
    p.add_argument("--texture", metavar="N", type=_int_at_least(0), default=None,
                   help="also pair each item with its N nearest by texture orientation and its strength "
                        "(structure tensor; for copies of fibres and other oriented textures, which the network "
                        "ranks among many panels of their kind), kept only where the first pass finds them alike. "
                        "Default: 30 (0 with --no-verify); --texture 0 turns it off")
    p.add_argument("--gate-nearest", action="store_true",
                   help="put each item's nearest --candidates pairs through the first pass too and give the full "
                        "pixel check only those it finds alike (about 0.25 against 1.8 ms per pair on 2 CPU cores); "
                        "the others stay in the table unchecked (match empty), their distance fused as if the check "
                        "had given them 0.2, its typical match for such pairs. Needs the pixel check")
    p.add_argument("--mode", choices=SCREEN_MODES, default="all",
                   help="pairs inside one document only ('within'), between documents only ('across'), or both")
    p.add_argument("--threshold", metavar="F", type=_positive_float, default=None,
                   help="keep only pairs whose distance (or the same with crop f, where smaller) is <= F, and "
                        "pairs verified by their pixels (1 is the decision); default: every candidate pair")
    p.add_argument("--store", metavar="DIR", default=None,
                   help="write the embeddings to this folder chunk by chunk; a later screen with the same "
                        "store resumes, and new sources are screened against everything stored")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run the reading and embedding on this dask.distributed scheduler "
                        "(e.g. tcp://host:8786; needs the 'distributed' package and a --model file the "
                        "workers can read, or the bundled model)")
    p.add_argument("--files-per-task", metavar="N", type=_int_at_least(1), default=16,
                   help="with --scheduler: files read and embedded per cluster task")
    panels = p.add_mutually_exclusive_group()
    panels.add_argument("--split-panels", dest="split_panels", action="store_true", default=True,
                        help="cut multi-panel figures into panels, each keeping its box (the default)")
    panels.add_argument("--no-split-panels", dest="split_panels", action="store_false",
                        help="treat every figure as one image")
    p.add_argument("--pdf-pages", choices=PDF_PAGES, default="auto",
                   help="render PDF pages: 'auto' = pages without embedded images (vector figures), "
                        "'always' = every page too, 'never' = only extract embedded images")
    p.add_argument("--pdf-dpi", metavar="DPI", type=_positive_float, default=150.0, help="resolution of rendered PDF pages")
    p.add_argument("--batch-size", metavar="N", type=_int_at_least(1), default=64,
                   help="images embedded per batch (each in every stored pose)")
    p.add_argument("--pose-embedding", choices=("basis", "all"), default="basis",
                   help="'basis': embed 6 of the 16 poses (4 of the 8), through whose pairs every flip, "
                        "turn and inversion is still reached, 2.2x the items per second (measured); "
                        "'all': embed every pose and score pairs exactly as 'pairwise' does")
    p.add_argument("--compile", action="store_true",
                   help="embed with a torch.compile'd network: about 1.35x faster on a 2-core CPU after "
                        "~30 s of compiling (needs a C++ compiler; falls back with a warning); "
                        "not with --scheduler")
    p.add_argument("--index", choices=("auto", "flat", "ivf"), default="auto",
                   help="neighbour index: 'flat' exact, 'ivf' (faiss) searches the nearest cells only, "
                        "for very large corpora; 'auto': IVF from 200,000 stored vectors on")
    p.add_argument("--metric", choices=("l1", "l2"), default="l1",
                   help="neighbour search metric in the whitened embedding space: 'l1' (default; the "
                        "model's own) or 'l2' (about 3x faster search on 10,000 generated panels, but "
                        "recall@10 of planted copies 0.978 instead of 0.992 there); pairs are scored "
                        "with f either way")
    p.add_argument("--no-whiten", action="store_true",
                   help="search neighbours with the plain distance f, not in the corpus's whitened "
                        "embedding space (the default from 512 stored vectors on; found 2.6x the planted "
                        "copies at 10 candidates among 5,000 generated panels)")
    p.add_argument("--no-hub-correction", action="store_true",
                   help="rank each item's neighbours by plain distance, without subtracting each "
                        "neighbour's mean distance to its 10 nearest others (the default, which keeps "
                        "panels that are near everything from filling every item's candidates)")
    p.add_argument("--no-crops", action="store_true",
                   help="search with whole images only: no 3 x 3 grid of crop windows per item (each 3/4 "
                        "of the width and height): about 6x faster; the crops find copies cut from larger "
                        "panels (recall@10 of planted copies among 10,000 generated panels 0.524 without, "
                        "0.838 with)")
    p.add_argument("--crops", choices=("pixels", "features"), default=None,
                   help="how the crop windows are embedded: 'pixels' (default) cuts each window out and "
                        "embeds it; 'features' takes all 9 from one pass of the conv blocks over the item, "
                        "3x faster embedding on 2 CPU cores but approximate windows that find fewer copies "
                        "cut from larger panels (0.958 instead of 0.988 of planted copies among the "
                        "candidates of a 10,000-panel calibration corpus; docs/screening.md). A store "
                        "keeps its layout")
    p.add_argument("--no-verify", action="store_true",
                   help="no pixel check of the candidate pairs (the normalised cross-correlation of "
                        "band-passed 64 px thumbnails over flips, turns, sizes and small rotations, about "
                        "1.8-2.6 ms per pair on 2 CPU cores); with it, pairs whose pixels match "
                        "(match >= 0.6) lead, best first")
    p.add_argument("--overlap", action="store_true",
                   help="add the pixel check's overlap stage: two panels that share a region, neither holding "
                        "the other (overlapping fields of view), compared over the shared region; about 1.3-1.4x "
                        "the checking time, and repeated structure (a gel's lanes) can match a different region")
    p.add_argument("--localize", metavar="N", type=_int_at_least(0), default=50,
                   help="localise the best N pairs (matched regions and transform from keypoints)")
    p.add_argument("--max-pairs", metavar="N", type=_int_at_least(1), default=100,
                   help="pairs shown in report.html (the CSV and JSON hold all)")
    p.add_argument("--top", metavar="N", type=_int_at_least(0), default=10, help="pairs printed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_screen)


def _model_file(path) -> str | None:
    """--model for a cluster screen: the file itself (workers load it), folders resolved."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        for name in (MODEL_NAME, CHECKPOINT_NAME):
            if (p / name).is_file():
                return str(p / name)
        raise CliError(f"--model: folder {path!r} holds neither {MODEL_NAME} nor {CHECKPOINT_NAME}")
    if not p.is_file():
        raise CliError(f"--model: no such file {path!r}")
    return str(p)


def _item_label(row, names: dict) -> str:
    """``name [pN] [x0,y0,x1,y1]``: an item's file (short name), page and panel box."""
    import pandas as pd

    label = names.get(row["source"], str(row["source"]))
    page = row.get("page")
    if page is not None and not pd.isna(page):
        label += f" p{int(page)}"
    panel = row.get("panel")
    if isinstance(panel, (tuple, list)):
        label += " [" + ",".join(str(int(v)) for v in panel) + "]"
    return label


def _cmd_screen(args) -> int:
    _check_sources_exist(args.sources)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {args.out!r} exists and is not a folder")
    if args.store is not None and Path(args.store).exists() and not Path(args.store).is_dir():
        raise CliError(f"--store {args.store!r} exists and is not a folder")
    from .screening import SourceOptions

    options = SourceOptions(split_panels=args.split_panels, pdf_pages=args.pdf_pages, pdf_dpi=args.pdf_dpi)
    kw = dict(candidates=args.candidates, poses=args.poses, mode=args.mode, threshold=args.threshold,
              batch_size=args.batch_size, store=args.store, localize=args.localize, options=options,
              pose_embedding=args.pose_embedding, index=args.index, whiten=not args.no_whiten,
              crops=False if args.no_crops else (args.crops or "pixels"), verify=not args.no_verify,
              hub_correction=not args.no_hub_correction, overlap=args.overlap, wider=args.wider,
              texture=args.texture, metric=args.metric, gate_nearest=args.gate_nearest)
    if args.no_crops and args.crops is not None:
        raise CliError(f"--crops {args.crops} and --no-crops contradict each other: drop one")
    if args.wider and args.no_verify:
        raise CliError("--wider needs the pixel check (its first pass decides which of the wider search's pairs "
                       "are kept): drop --no-verify, or --wider")
    if args.texture and args.no_verify:
        raise CliError("--texture needs the pixel check (its first pass decides which of the texture neighbours' "
                       "pairs are kept): drop --no-verify, or --texture")
    if args.gate_nearest and args.no_verify:
        raise CliError("--gate-nearest needs the pixel check (the gate is its first pass): drop --no-verify, "
                       "or --gate-nearest")
    if args.scheduler is not None:
        if args.compile:
            raise CliError("--compile is not supported with --scheduler (the workers embed eagerly)")
        if args.pose_penalty is not None or args.no_pixels:
            raise CliError("--pose-penalty and --no-pixels are not supported with --scheduler: a cluster screen "
                           "uses the model file's own values; save a model with the values you want "
                           "(model.pose_penalty, model.pixel_check) and pass it as --model")
        try:
            from .screening.cluster import iter_screen_on_cluster
            import distributed  # noqa: F401
        except ImportError as exc:
            raise CliError(f"--scheduler needs the 'distributed' package ({_one_line(exc)}); "
                           "pip install distributed") from None
        reports = iter_screen_on_cluster(list(args.sources), _model_file(args.model), scheduler=args.scheduler,
                                         files_per_task=args.files_per_task, device=args.device, **kw)
        where = f"on the cluster at {args.scheduler}"
    else:
        from .screening import iter_screen

        model = _load_model(args.model, args.device, args.precision, args.pose_penalty, not args.no_pixels)
        reports = iter_screen(list(args.sources), model, compile=args.compile, **kw)
        where = "in this process"

    from tqdm import tqdm

    labels = {"embed": "embedding", "search": "searching", "verify": "checking pixels", "localize": "localising"}
    bar = None
    stage = None
    result = None
    t0 = time.perf_counter()
    try:
        for report in reports:
            if report.finished:
                result = report.result
                break
            if report.stage != stage:
                if bar is not None:
                    bar.close()
                stage = report.stage
                bar = tqdm(total=report.total if report.total >= 0 else None, unit="item" if stage not in ("verify", "localize") else "pair",
                           desc=labels.get(stage, stage), disable=args.no_progress, dynamic_ncols=True,
                           file=sys.stderr)
            if report.total >= 0 and bar.total != report.total:
                bar.total = report.total
            bar.update(report.done - bar.n)
    finally:
        if bar is not None:
            bar.close()
    assert result is not None
    seconds = time.perf_counter() - t0

    out.mkdir(parents=True, exist_ok=True)
    html_path = result.to_html(out / "report.html", max_pairs=args.max_pairs)
    csv_path = result.to_csv(out / "pairs.csv")
    json_path = result.to_json(out / "report.json")

    pairs, items, skipped = result.pairs, result.items, result.skipped
    restored = result.info.get("restored", 0)
    print(f"screened {len(items)} items ({restored} restored from the store) from {len(args.sources)} "
          f"source(s) {where} in {seconds:.0f} s; poses: {args.poses} ({args.pose_embedding}), mode: {args.mode}, "
          f"candidates: {args.candidates}")
    if result.info.get("wider"):
        print(f"wider search ({result.info['wider']} more neighbours per item): {result.info['wider_pairs']} pairs "
              f"beyond the first {args.candidates} neighbours, "
              f"{result.info['wider_pairs_kept']} kept by the first pass "
              f"(>= {result.info['first_pass_threshold']:g}) for the full check")
    if result.info.get("texture"):
        print(f"texture neighbours ({result.info['texture']} per item): {result.info['texture_pairs']} pairs the "
              f"embedding search had not found, {result.info['texture_pairs_kept']} kept by the first pass "
              f"(>= {result.info['first_pass_threshold']:g}) for the full check")
    if result.info.get("gate_nearest"):
        print(f"gate on the nearest pairs: {result.info['nearest_pairs_gated']} not alike in the first pass "
              f"(< {result.info['first_pass_threshold']:g}), listed without the full check")
    thr = f" with min(f, crop f) <= {args.threshold:g}" if args.threshold is not None else ""
    checked = f"; pixels match (>= {result.info['match_threshold']:g}): {result.info['verified_by_pixels']}" \
        if result.info.get("match_threshold") is not None else ""
    print(f"candidate pairs{thr}: {len(pairs)}; distance <= 1 (duplicate): {int((pairs['distance'] <= 1.0).sum())}{checked}")
    if len(pairs) and args.top:
        sources = list(dict.fromkeys(items["source"].tolist()))
        names = dict(zip(sources, _short_names(sources)))
        rows = items.set_index("id", drop=False)
        shown = pairs.head(args.top)
        print(f"best {len(shown)} pairs (verified by pixels or keypoints first, then by distance):")
        for _, pr in shown.iterrows():
            la = _item_label(rows.loc[int(pr["a"])].to_dict(), names)
            lb = _item_label(rows.loc[int(pr["b"])].to_dict(), names)
            crop = f"  f={pr['f']:.3f}"
            crop += f"  crop f={pr['crop_distance']:.3f}" if pr["crop_distance"] == pr["crop_distance"] else ""   # not NaN
            match = f"  match={pr['match']:.2f}" if pr["match"] == pr["match"] else ""
            print(f"  {la}  <->  {lb}   distance={pr['distance']:.3f}{crop}{match}  p={pr['probability']:.3f}  {pr['transform']}")
    print(f"skipped: {len(skipped)}")
    for r in skipped.head(5).to_dict("records"):
        print(f"  {r['source']}: {_one_line(r['reason'])}")
    if len(skipped) > 5:
        print(f"  ... and {len(skipped) - 5} more (see {csv_path.parent / 'report.json'})")
    print(f"report: {html_path}")
    print(f"pairs:  {csv_path}")
    print(f"json:   {json_path}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------

def _add_evaluate_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate", formatter_class=_Formatter, help="triplet accuracy and other measures on held-out images",
        description="Builds a figure-re-use test set (manipulations written independently of the "
                    "training deformations) from parent images, scores the model and the baselines on "
                    "the same pairs and prints triplet accuracy (random and hard negatives), ROC AUC and "
                    "the accuracy of the distance <= 1 decision, overall and per manipulation family. Default "
                    "parents: generated scenes from the evaluation seed range, never used for training.")
    _add_model_options(p)
    p.add_argument("--parents", nargs="+", metavar="IMAGES", default=None,
                   help="parent image files and/or folders to build the test set from (instead of "
                        "generated scenes); never evaluate on images you trained on")
    p.add_argument("--n-parents", metavar="N", type=_int_at_least(2), default=12,
                   help="number of generated parent scenes (without --parents)")
    p.add_argument("--parent-size", metavar="N", type=_int_at_least(192), default=512, help="side of generated parents, px")
    p.add_argument("--n-per-family", metavar="N", type=_int_at_least(1), default=20, help="triplets per manipulation family")
    p.add_argument("--seed", metavar="N", type=_int_at_least(0), default=0, help="seed of the test set (and of generated parents)")
    p.add_argument("--threshold", metavar="F", type=float, default=1.0, help="decision threshold of the distance")
    p.add_argument("--manipulate-negatives", action="store_true",
                   help="apply the family to the negatives too, so traces of a manipulation are no cue")
    p.add_argument("--baselines", nargs="+", choices=("phash", "phash_dihedral", "orb_ransac"),
                   default=["phash", "phash_dihedral", "orb_ransac"], metavar="NAME",
                   help="baselines scored on the same pairs: phash, phash_dihedral, orb_ransac")
    p.add_argument("--no-baselines", action="store_true", help="score the model only")
    p.add_argument("--paper-protocol", action="store_true",
                   help="also run the paper's synthetic protocol (classes of 10 deformed copies) on the parents")
    p.add_argument("--out", metavar="DIR", default=None, help="also write summary.csv and per_family.csv here")
    p.set_defaults(func=_cmd_evaluate)


def _import_evaluation():
    try:
        from . import evaluation
    except ImportError as exc:
        raise CliError(f"the evaluation package is not available in this installation ({exc})") from None
    if not hasattr(evaluation, "evaluate_model"):
        raise CliError("this installation's napari_siamforensic.evaluation has no evaluate_model")
    return evaluation


def _cmd_evaluate(args) -> int:
    evaluation = _import_evaluation()
    model = _load_model(args.model, args.device, args.precision, args.pose_penalty, not args.no_pixels)
    if args.parents:
        parents = [im for _, im in _collect_images(args.parents)]
        source = f"{len(parents)} parent images from {' '.join(args.parents)}"
    else:
        from .core.synthetic import EVALUATION_SEED_START, generate_scenes

        parents = [im for _, im in generate_scenes(args.n_parents, seed=EVALUATION_SEED_START + args.seed,
                                                   size=(args.parent_size, args.parent_size))]
        source = (f"{len(parents)} generated scenes of {args.parent_size} px "
                  f"(seeds from {EVALUATION_SEED_START + args.seed})")
    if len(parents) < 2:
        raise CliError(f"the test set needs at least 2 parent images, got {len(parents)}")

    def distance(list_a, list_b):
        return model.distance(list_a, list_b, poses=args.poses)

    baselines = False if args.no_baselines else list(dict.fromkeys(args.baselines))
    print(f"building the figure-re-use test set from {source}; scoring ...", file=sys.stderr)
    t0 = time.perf_counter()
    result = evaluation.evaluate_model(distance, parents=parents, seed=args.seed, n_per_family=args.n_per_family,
                                       baselines=baselines, threshold=args.threshold,
                                       manipulate_negatives=args.manipulate_negatives)
    summary, per_family = result["summary"], result["per_family"]
    fmt = getattr(evaluation, "markdown_table", None)
    show = (lambda df, name: fmt(df, name)) if fmt else (lambda df, name: df.to_string())
    print(f"figure re-use test: {summary['n_pairs'].iloc[0]} pairs, model poses: {args.poses}, "
          f"threshold {args.threshold:g} ({time.perf_counter() - t0:.0f} s)")
    print()
    print(show(summary, "method"))
    print()
    print("triplet accuracy per manipulation family:")
    print(show(per_family, "family"))
    if args.paper_protocol:
        res = evaluation.paper_protocol(parents, distance, seed=args.seed)
        print()
        print(f"paper's synthetic protocol: triplet accuracy {res['accuracy']:.3f} +- {res['accuracy_std']:.3f} "
              f"({res['n_classes']} classes x {res['n_per_class']}; the paper reports "
              f"{res['paper_accuracy']:.3f} on 402 classes)")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        summary.to_csv(out / "summary.csv")
        per_family.to_csv(out / "per_family.csv")
        print(f"tables written to {out}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# sheet
# --------------------------------------------------------------------------------------------

def _add_sheet_parser(sub) -> None:
    p = sub.add_parser(
        "sheet", formatter_class=_Formatter, help="write a contact sheet PNG of sampled training triplets",
        description="Samples training triplets exactly as training does and writes them as a PNG: three "
                    "rows (anchor, same = its deformed copy, different), one column per triplet, 128 px "
                    "tiles. Use it to look at what a deformation setting produces.")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="source images: files and/or folders")
    p.add_argument("--out", required=True, metavar="PNG", help="the PNG file to write")
    p.add_argument("--n", metavar="N", type=_int_at_least(1), default=8, help="triplets (columns), at most 64")
    p.add_argument("--seed", metavar="N", type=_int_at_least(0), default=0, help="random seed (same seed, same sheet)")
    p.add_argument("--patch-size", metavar="N", type=_int_at_least(16), default=256, help="side of the source patches, px")
    p.add_argument("--hard-negatives", type=_probability, default=0.5, metavar="FRACTION",
                   help="share of 'different' images cut from the anchor's own image")
    p.add_argument("--deform-negatives", type=_probability, default=0.5, metavar="P",
                   help="probability that the 'different' image is deformed too")
    p.add_argument("--device", metavar="DEVICE", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    _add_deform_options(p)
    p.set_defaults(func=_cmd_sheet)


def _cmd_sheet(args) -> int:
    from .core.config import TrainConfig
    from .core.sheet import sheet_size, write_contact_sheet

    _check_sources_exist(args.images)
    config = TrainConfig(deform=_deform_config(args), patch_size=args.patch_size,
                         hard_negative_fraction=args.hard_negatives, p_deform_negative=args.deform_negatives,
                         device=args.device, validation_triplets=0)
    path = write_contact_sheet(list(args.images), args.out, n=args.n, config=config, seed=args.seed)
    h, w = sheet_size(args.n)
    print(f"contact sheet of {args.n} triplets ({w} x {h} px) written to {path}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# segment
# --------------------------------------------------------------------------------------------

def _add_segment_parser(sub) -> None:
    p = sub.add_parser(
        "segment", formatter_class=_Formatter, help="apply a saved scribble segmenter to many images",
        description="Applies a segmenter saved by the Segment widget or Segmenter.save() to image files "
                    "and folders (searched recursively), writing one label TIFF per input "
                    "(<name>_labels.tif) beside it or into --out. Files that cannot be read or "
                    "segmented are reported and skipped; the others are still written. Existing label "
                    "files are kept unless --overwrite.")
    p.add_argument("segmenter", metavar="SEGMENTER", help="the segmenter file written by Segmenter.save() or the Segment widget")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="image files and/or folders")
    p.add_argument("--out", metavar="DIR", default=None, help="write the label images here instead of beside the inputs")
    p.add_argument("--model", metavar="PATH", default=None,
                   help="the forensic model file the segmenter was fitted with; needed unless it was fitted "
                        "with the bundled default model")
    p.add_argument("--overwrite", action="store_true", help="replace existing label files")
    p.add_argument("--device", metavar="DEVICE", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_segment)


def _cmd_segment(args) -> int:
    from .core.segment import Segmenter
    from .core.segment_batch import segment_files

    if not Path(args.segmenter).exists():
        raise CliError(f"segmenter {args.segmenter!r} not found")
    _check_sources_exist(args.images)
    try:
        seg = Segmenter.load(args.segmenter, model=args.model, device=args.device)
    except ValueError as exc:   # the library's hint names its argument; here it is an option
        raise CliError(str(exc).replace("Segmenter.load(path, model=...)", "--model PATH")) from None
    reports = segment_files(seg, list(args.images), out_dir=args.out, overwrite=args.overwrite)
    bar = None
    written, failed = 0, []
    try:
        for r in reports:
            if bar is None and not args.no_progress:
                from tqdm import tqdm

                bar = tqdm(total=r.total, unit="file", desc="segment", file=sys.stderr)
            if bar is not None:
                bar.update(1)
            if r.error is None:
                written += 1
                print(f"{r.source} -> {r.output}")
            else:
                failed.append((r.source, r.error))
    finally:
        if bar is not None:
            bar.close()
    for src, why in failed:
        print(f"skipped {src}: {_one_line(why)}", file=sys.stderr)
    print(f"{written} label image(s) written, {len(failed)} file(s) skipped")
    return EXIT_OK if written or not failed else EXIT_FAILED


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------

def _add_demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo", formatter_class=_Formatter, help="the headless demo: planted duplicates, scored",
        description="Builds sample images with planted duplicates (a mirrored copy, a crop scaled back "
                    "up and a gamma change of one scene, plus unrelated scenes and another field of the "
                    "same kind), scores every pair and prints the table and the flagged pairs. Uses the "
                    "bundled default model; without one (or with --train) it first trains a tiny "
                    "demonstration model on the sample scenes. Needs neither napari nor a display.")
    p.add_argument("--model", metavar="PATH", default=None, help="use this model file instead of the bundled one")
    p.add_argument("--train", action="store_true", help="train the tiny model even if a bundled model exists")
    p.add_argument("--steps", metavar="N", type=_int_at_least(1), default=60, help="steps of the tiny training")
    p.add_argument("--batch-size", metavar="N", type=_int_at_least(2), default=16, help="triplets per step of the tiny training")
    p.add_argument("--seed", metavar="N", type=_int_at_least(0), default=0, help="seed of the scenes and of the tiny training")
    p.add_argument("--poses", choices=POSES, default="dihedral", help="poses compared (see 'score --help')")
    p.add_argument("--device", metavar="DEVICE", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    p.add_argument("--save-images", metavar="DIR", default=None,
                   help="also write the sample images as PNGs here (try 'siamforensic pairwise DIR' on them)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar during the tiny training")
    p.set_defaults(func=_cmd_demo)


def demo_images(seed: int = 0):
    """The demo's sample images: ``[(name, description, (H, W) float32 in [0, 1])]`` and the set
    of index pairs that are planted duplicates (all pairs among the first four)."""
    import numpy as np
    from PIL import Image

    from .core.synthetic import generate_scene

    size = 384
    base_seed = 1000 + 10 * seed          # training-range seeds (< 1,000,000), not evaluation ones
    original = generate_scene("nuclei", base_seed, (size, size))
    flipped = np.ascontiguousarray(original[:, ::-1])
    y0, x0, side = 40, 70, 260
    crop = np.asarray(Image.fromarray(original[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.BICUBIC),
                      dtype=np.float32).clip(0, 1)
    gamma = (original.clip(0, 1) ** 0.5).astype(np.float32)
    items = [
        ("original", "a nuclei scene", original),
        ("flipped", "the original, mirrored left-right", flipped),
        ("crop", f"a {side} px crop of the original, scaled up to {size} px", crop),
        ("gamma", "the original with gamma 0.5", gamma),
        ("tissue", "an unrelated tissue scene", generate_scene("tissue", base_seed + 1, (size, size))),
        ("blot", "an unrelated western blot", generate_scene("blot", base_seed + 2, (size, size))),
        ("fibres", "an unrelated fibre scene", generate_scene("fibres", base_seed + 3, (size, size))),
        ("nuclei-2", "another field of nuclei (a hard negative)", generate_scene("nuclei", base_seed + 4, (size, size))),
    ]
    planted = {(i, j) for i in range(4) for j in range(i + 1, 4)}
    return items, planted


def _cmd_demo(args) -> int:
    import numpy as np

    from .core.scoring import default_weights_path, load_model

    t0 = time.perf_counter()
    items, planted = demo_images(args.seed)
    names = [n for n, _, _ in items]
    images = [im for _, _, im in items]
    model = None
    if args.model is not None:
        model = _load_model(args.model, args.device)
        print(f"model: {args.model}")
    elif not args.train:
        try:
            model = load_model(None, device=args.device)
            print("model: the bundled default model")
        except ValueError as exc:
            if default_weights_path().is_file():
                print(f"the bundled default model could not be loaded ({_one_line(exc)}): "
                      "training a tiny demonstration model instead")
            else:
                print("this installation has no bundled default model yet: training a tiny demonstration model")
    if model is None:
        from tqdm import tqdm

        from .core.config import TrainConfig
        from .core.train import iter_train

        # train on the unmanipulated scenes only (never on the planted copies)
        sources = [images[0]] + images[4:]
        config = TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, device=args.device,
                             validation_triplets=32, eval_every=args.steps, checkpoint_every=args.steps)
        print(f"tiny training: {args.steps} steps of {args.batch_size} triplets on the {len(sources)} "
              "unmanipulated sample scenes (a demonstration, not a useful model)")
        last = None
        with tqdm(total=args.steps, unit="step", desc="training", disable=args.no_progress,
                  dynamic_ncols=True, file=sys.stderr) as bar:
            for report in iter_train(sources, config):
                bar.update(1)
                bar.set_postfix(loss=f"{report.loss:.3f}", refresh=False)
                last = report
        model = last.model
        acc = f", validation triplet accuracy {last.triplet_accuracy:.2f}" if last.triplet_accuracy is not None else ""
        print(f"trained in {last.seconds:.0f} s{acc}")
    if args.save_images:
        from PIL import Image

        out = Path(args.save_images)
        out.mkdir(parents=True, exist_ok=True)
        for k, (name, _, im) in enumerate(items):
            Image.fromarray(np.round(im.clip(0, 1) * 255).astype(np.uint8)).save(out / f"{k}_{name}.png")
        print(f"sample images written to {out}")
    print()
    print("sample images:")
    for k, (name, what, _) in enumerate(items):
        print(f"  {k}  {name:<9} {what}")
    matrix = model.pairwise(images, poses=args.poses)
    print()
    print(f"distance ({_distance_words(model, args.poses)}; <= 1 means duplicate):")
    print(_format_matrix(matrix, names))
    flagged = _flagged_pairs(matrix, 1.0)
    print()
    print(f"pairs flagged as duplicates (distance <= 1): {len(flagged)}")
    for i, j, f in flagged:
        tag = "planted duplicate" if (i, j) in planted else "FALSE ALARM"
        print(f"  {names[i]:<9} <-> {names[j]:<9} distance={f:.3f}  p={float(model.probability_from_distance(f)):.3f}  {tag}")
    n = len(items)
    found = sum((i, j) in planted for i, j, _ in flagged)
    false = len(flagged) - found
    others = n * (n - 1) // 2 - len(planted)
    missed = sorted(planted - {(i, j) for i, j, _ in flagged})
    print()
    print(f"found {found} of {len(planted)} planted duplicate pairs; {false} false alarms among {others} other pairs"
          + (f"; missed: {', '.join(f'{names[i]}-{names[j]}' for i, j in missed)}" if missed else ""))
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog=PROG, formatter_class=_Formatter,
        description="Find manipulated image duplicates with the forensic siamese network: train it, "
                    "score pairs and whole matrices, screen corpora of figures and PDFs, segment images with a "
                    "saved scribble segmenter, evaluate it, "
                    "look at its training data.",
        epilog=f"'{PROG} COMMAND --help' documents every option of a command. Exit codes: 0 success, "
               "1 the work failed, 2 bad input, 130 interrupted (Ctrl-C).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_train_parser(sub)
    _add_score_parser(sub)
    _add_pairwise_parser(sub)
    _add_screen_parser(sub)
    _add_segment_parser(sub)
    _add_evaluate_parser(sub)
    _add_sheet_parser(sub)
    _add_demo_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``siamforensic`` command; returns the exit code."""
    try:
        parser = build_parser()
        argv = list(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        args.argv = argv
    except SystemExit as exc:          # --help, --version, usage errors
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_BAD_INPUT)
    if args.command in ("screen", "pairwise", "evaluate", "segment", "train", "demo"):
        from .core.devices import retain_freed_memory

        retain_freed_memory()     # embedding on the CPU: about half the CPU time (see its docstring)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, FileNotFoundError, OSError) as exc:
        print(f"{PROG}: error: {_one_line(exc) or type(exc).__name__}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FloatingPointError, MemoryError) as exc:
        print(f"{PROG}: error: {_one_line(exc) or type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILED
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            print(f"{PROG}: error: out of memory ({_one_line(exc)[:200]}); lower --batch-size", file=sys.stderr)
            return EXIT_FAILED
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
