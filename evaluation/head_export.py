"""Save a trained probe head for the Space's Classify tab: ``probe_head.safetensors`` + ``probe_head.json``.

The saved head always has K output rows and is applied as ``softmax(embedding @ weight.T + bias)``. A
binary one-logit head (logit z for class 1) is saved as rows [0, w] / [0, b]: softmax([0, z]) gives
[1 - sigmoid(z), sigmoid(z)], the same probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pathfm.evaluation.protocol import PROTOCOL_NAME
from safetensors.torch import load_file, save_file
from torch import nn


def export_weights(head: nn.Linear, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, D) weight and (K,) bias for a softmax head (binary one-logit heads expanded as above)."""
    weight, bias = head.weight.detach().float(), head.bias.detach().float()
    if num_classes == 2 and weight.shape[0] == 1:
        weight = torch.cat([torch.zeros_like(weight), weight])
        bias = torch.cat([torch.zeros_like(bias), bias])
    return weight.contiguous(), bias.contiguous()


def save_probe_head(folder: Path, head: nn.Linear, results: dict) -> tuple[Path, Path]:
    """Write the head and its description into ``folder``.

    ``probe_head.json``: ``id2label`` ({"0": name, ...}), ``input_dim``, ``num_labels``, ``pooling``,
    ``protocol``, ``task``, ``seed``, ``model_revision``, ``activation`` ("softmax"), and the validation
    balanced accuracy of this head.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    classes = results["task"]["classes"]
    weight, bias = export_weights(head, len(classes))
    tensors_path = folder / "probe_head.safetensors"
    save_file({"weight": weight, "bias": bias}, str(tensors_path), metadata={"protocol": PROTOCOL_NAME})
    seed = results["best_run"]["seed"]
    meta = {
        "id2label": {str(i): name for i, name in enumerate(classes)},
        "label2id": {name: i for i, name in enumerate(classes)},
        "num_labels": len(classes),
        "input_dim": int(weight.shape[1]),
        "pooling": results["protocol"]["pooling"],
        "activation": "softmax",
        "protocol": results["protocol"]["name"],
        "task": results["task"]["name"],
        "proxy_labels": results["task"]["proxy_labels"],
        "seed": seed,
        "model_id": results["model"]["id"],
        "model_revision": results["model"]["revision"],
        "validation_balanced_accuracy": results["runs"][seed]["validation"]["balanced_accuracy"],
    }
    json_path = folder / "probe_head.json"
    json_path.write_text(json.dumps(meta, indent=2))
    return tensors_path, json_path


def load_probe_head(folder: Path) -> tuple[nn.Linear, dict]:
    """Read a saved head back: ``(nn.Linear(input_dim, num_labels), probe_head.json dict)``."""
    meta = json.loads((Path(folder) / "probe_head.json").read_text())
    tensors = load_file(str(Path(folder) / "probe_head.safetensors"))
    head = nn.Linear(meta["input_dim"], meta["num_labels"])
    head.load_state_dict({"weight": tensors["weight"], "bias": tensors["bias"]})
    return head.eval(), meta
