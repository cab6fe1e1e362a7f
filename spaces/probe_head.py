"""Read the linear probe head that the evaluation writes next to a model, and classify with it.

Files (written by ``python evaluation/linear_probe.py --save_head``; see pathfm.evaluation):

- ``probe_head.safetensors``: one linear layer, tensors ``weight`` (C, D) and ``bias`` (C,) (a single
  common prefix such as ``head.`` or ``linear.`` is accepted);
- ``probe_head.json``: ``id2label`` ({"0": "ADI", ...} or a list), ``input_dim`` (D) and ``pooling``: which
  backbone features the head was trained on: ``"pooler_output"`` (the model's pooled output, what
  ``pathfm.evaluation.embed`` uses by default), ``"cls_mean"`` (CLS + patch-token mean), ``"cls"`` or ``"mean"``.

pathfm.evaluation.head_export always writes C >= 2 rows applied with softmax (a binary one-logit head is
expanded to rows [0, w]); a C = 1 head from elsewhere is read as p(class 1) = sigmoid(logit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROBE_WEIGHTS = "probe_head.safetensors"
PROBE_CONFIG = "probe_head.json"
POOLINGS = ("pooler_output", "cls", "mean", "cls_mean")


class ProbeHeadError(ValueError):
    """probe_head files exist but are inconsistent; the message names the file and the problem."""


@dataclass
class ProbeHead:
    """A linear classifier on frozen backbone features.

    Attributes:
        weight: (C, D) float32.
        bias: (C,) float32.
        id2label: class index -> name; 2 entries when C == 1 (binary head).
        input_dim: D.
        pooling: Features the head expects: "pooler_output", "cls", "mean" (patch mean) or "cls_mean".
    """

    weight: np.ndarray
    bias: np.ndarray
    id2label: dict[int, str]
    input_dim: int
    pooling: str

    def features(self, pooled: np.ndarray, cls_token: np.ndarray, patch_tokens: np.ndarray) -> np.ndarray:
        """Build the head's input from backbone outputs.

        Args:
            pooled: (B, D) the model's ``pooler_output``.
            cls_token: (B, hidden) final-norm CLS token.
            patch_tokens: (B, P, hidden) final-norm patch tokens.

        Returns:
            (B, D) features for :meth:`predict`.
        """
        if self.pooling == "pooler_output":
            return pooled
        if self.pooling == "cls":
            return cls_token
        mean = patch_tokens.mean(axis=1)
        if self.pooling == "mean":
            return mean
        return np.concatenate([cls_token, mean], axis=1)

    def predict(self, features: np.ndarray) -> list[dict[str, float]]:
        """Class probabilities.

        Args:
            features: (B, D).

        Returns:
            One {label: probability} dict per row (softmax over C classes, or sigmoid for a binary head).

        Raises:
            ValueError: if D does not match ``input_dim``.
        """
        if features.ndim != 2 or features.shape[1] != self.input_dim:
            raise ValueError(f"probe head expects (B, {self.input_dim}) features, got {features.shape}")
        logits = features.astype(np.float64) @ self.weight.T.astype(np.float64) + self.bias
        if logits.shape[1] == 1:
            positive = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            probs = np.stack([1.0 - positive, positive], axis=1)
        else:
            shifted = logits - logits.max(axis=1, keepdims=True)
            exp = np.exp(shifted)
            probs = exp / exp.sum(axis=1, keepdims=True)
        return [{self.id2label[i]: float(row[i]) for i in range(row.shape[0])} for row in probs]


def _strip_prefix(tensors: dict[str, np.ndarray], path: str) -> tuple[np.ndarray, np.ndarray]:
    """Find the weight/bias pair in a one-layer state dict."""
    weights = [k for k in tensors if k == "weight" or k.endswith(".weight")]
    biases = [k for k in tensors if k == "bias" or k.endswith(".bias")]
    if len(weights) != 1 or len(biases) != 1:
        raise ProbeHeadError(
            f"{path}: expected one linear layer (weight, bias), found keys {sorted(tensors)}"
        )
    return tensors[weights[0]].astype(np.float32), tensors[biases[0]].astype(np.float32)


def read_probe_head(weights_path: str | Path, config_path: str | Path) -> ProbeHead:
    """Read and validate a probe head.

    Args:
        weights_path: probe_head.safetensors.
        config_path: probe_head.json.

    Returns:
        The head.

    Raises:
        ProbeHeadError: on missing keys or inconsistent shapes (message names the file).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    config_path, weights_path = Path(config_path), Path(weights_path)
    try:
        meta = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ProbeHeadError(f"{config_path}: unreadable ({error})") from None
    try:
        tensors = load_file(str(weights_path))
    except (OSError, SafetensorError) as error:
        raise ProbeHeadError(f"{weights_path}: unreadable ({error})") from None
    weight, bias = _strip_prefix(tensors, str(weights_path))
    raw_labels = meta.get("id2label")
    if isinstance(raw_labels, list):
        id2label = dict(enumerate(map(str, raw_labels)))
    elif isinstance(raw_labels, dict):
        id2label = {int(k): str(v) for k, v in raw_labels.items()}
    else:
        raise ProbeHeadError(f"{config_path}: 'id2label' missing or not a dict/list")
    input_dim = int(meta.get("input_dim", meta.get("in_features", weight.shape[1])))
    pooling = str(meta.get("pooling", "cls"))
    if pooling not in POOLINGS:
        raise ProbeHeadError(f"{config_path}: pooling {pooling!r} is not one of {POOLINGS}")
    num_out = weight.shape[0]
    expected_labels = 2 if num_out == 1 else num_out
    if weight.ndim != 2 or weight.shape[1] != input_dim or bias.shape != (num_out,):
        raise ProbeHeadError(
            f"{weights_path}: weight {weight.shape} / bias {bias.shape} do not match input_dim {input_dim}"
        )
    if sorted(id2label) != list(range(expected_labels)):
        raise ProbeHeadError(
            f"{config_path}: id2label has {len(id2label)} entries, the head has {num_out} output(s) "
            f"(expected labels 0..{expected_labels - 1})"
        )
    return ProbeHead(weight, bias, id2label, input_dim, pooling)


def load_probe_head(source: str, is_folder: bool) -> ProbeHead | None:
    """The probe head stored with a model folder or Hub repo, or None when there is none.

    Args:
        source: Model folder or Hub id.
        is_folder: Whether ``source`` is a local folder (else the Hub cache is asked, offline-safe).

    Returns:
        The head, or None when the two files are not both present.

    Raises:
        ProbeHeadError: when the files exist but are inconsistent.
    """
    if is_folder:
        weights, config = Path(source) / PROBE_WEIGHTS, Path(source) / PROBE_CONFIG
        if not (weights.is_file() and config.is_file()):
            return None
        return read_probe_head(weights, config)
    from huggingface_hub import hf_hub_download

    try:
        config = hf_hub_download(source, PROBE_CONFIG)
        weights = hf_hub_download(source, PROBE_WEIGHTS)
    except Exception:  # noqa: BLE001  (not in the repo, not cached, offline, no access: no Classify tab)
        return None
    return read_probe_head(weights, config)
