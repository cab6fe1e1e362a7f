"""``transformers.TrainingArguments`` flag names accepted by the DINO command line, and "did you mean" hints.

Hugging Face users type ``--learning_rate`` or ``--per_device_train_batch_size``; where the meaning is the
same as one of our flags, the name is rewritten before parsing (:data:`RENAMED`). Two warm-up spellings are
converted, since our schedule counts warm-up in epochs of ``steps_per_epoch`` optimizer steps:
``--warmup_steps N`` -> ``warmup_epochs = N / steps_per_epoch`` and ``--warmup_ratio r`` ->
``warmup_epochs = r * total_steps / steps_per_epoch`` (:func:`apply_warmup`). Any other unknown flag is a
one-line error suggesting the closest known flag (:func:`check_flags`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

RENAMED: dict[str, str] = {
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "per_device_batch_size",
    "max_grad_norm": "clip_grad",
    "dataloader_num_workers": "num_workers",
}
"""TrainingArguments name -> our name, same meaning (``max_grad_norm`` 0 disables clipping in both)."""

WARMUP = ("warmup_steps", "warmup_ratio")
"""TrainingArguments warm-up flags converted to ``warmup_epochs`` after parsing."""

PRECISION = {"bf16": "bf16", "fp16": "fp16"}
"""Boolean TrainingArguments precision flags -> our ``--mixed_precision`` value."""


def _split(token: str) -> tuple[str, str | None]:
    """``--name=value`` -> (name, value); ``--name`` -> (name, None)."""
    name, sep, value = token[2:].partition("=")
    return name, (value if sep else None)


def rewrite(argv: list[str]) -> tuple[list[str], dict[str, float]]:
    """Replace TrainingArguments names by ours and take the warm-up flags out.

    Args:
        argv: Command-line arguments (no program name, no preset).

    Returns:
        (the rewritten arguments, {"warmup_steps" / "warmup_ratio": value} to give to :func:`apply_warmup`).

    Raises:
        ValueError: a warm-up flag without a number, or both warm-up flags.
    """
    out: list[str] = []
    warmup: dict[str, float] = {}
    tokens = iter(argv)
    for token in tokens:
        if not token.startswith("--"):
            out.append(token)
            continue
        name, value = _split(token)
        if name in WARMUP:
            raw = value if value is not None else next(tokens, None)
            try:
                warmup[name] = float(raw)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ValueError(f"--{name} needs a number, got {raw!r}") from None
        elif name in PRECISION and value is None:
            out += ["--mixed_precision", PRECISION[name]]
        elif name in RENAMED:
            out.append(f"--{RENAMED[name]}" + (f"={value}" if value is not None else ""))
        else:
            out.append(token)
    if len(warmup) > 1:
        raise ValueError("give one of --warmup_steps and --warmup_ratio (or --warmup_epochs), not both")
    return out, warmup


def check_flags(argv: Iterable[str], known: Iterable[str]) -> None:
    """Refuse flags the parser does not know, suggesting the closest known one.

    Args:
        argv: Rewritten arguments (see :func:`rewrite`).
        known: Option strings of the parser (``--lr``, ``--output_dir``...).

    Raises:
        ValueError: ``unknown flag --x; did you mean --y?`` for the first unknown flag.
    """
    known = set(known)
    names = sorted(known | {f"--{n}" for n in (*RENAMED, *WARMUP, *PRECISION)})
    for token in argv:
        if not token.startswith("--"):
            continue
        flag = "--" + _split(token)[0]
        if flag in known:
            continue
        close = difflib.get_close_matches(flag, names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see --help for the flags"
        raise ValueError(f"unknown flag {flag}; {hint}")


def apply_warmup(warmup: dict[str, float], total_steps: int, steps_per_epoch: int) -> float | None:
    """``warmup_epochs`` for a converted warm-up flag, or None when none was given.

    Args:
        warmup: From :func:`rewrite`.
        total_steps: Optimizer steps of the run.
        steps_per_epoch: Optimizer steps per epoch of the schedule.

    Returns:
        Warm-up length in (fractional) epochs.

    Raises:
        ValueError: a negative value, or a ratio above 1.
    """
    if "warmup_steps" in warmup:
        steps = warmup["warmup_steps"]
        if steps < 0:
            raise ValueError(f"--warmup_steps must be >= 0, got {steps:g}")
        return steps / steps_per_epoch
    if "warmup_ratio" in warmup:
        ratio = warmup["warmup_ratio"]
        if not 0 <= ratio <= 1:
            raise ValueError(f"--warmup_ratio must be in [0, 1], got {ratio:g}")
        return ratio * total_steps / steps_per_epoch
    return None
