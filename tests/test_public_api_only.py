"""pathfm (package, benchmarks and tests) uses only the public names of the libraries it imports.

A static scan of every .py file: an import of a ``_``-prefixed module or name from a third-party library
(``from datasets.iterable_dataset import _BaseExamplesIterable``, ``import torch._dynamo``), or a
``_``-prefixed attribute read off a name bound by such an import (``AcceleratorState._reset_state``). Dunders
are public. The datasets-specific scan (private attributes of live datasets objects) is in
tests/datasets_scripts/test_ds_public_api.py.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["pathfm", "modeling", "datasets_scripts", "training", "evaluation", "spaces", "benchmarks", "tests"]
OURS = {"pathfm", "modeling", "datasets_scripts", "training", "evaluation", "spaces", "benchmarks", "tests"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def _third_party(module: str) -> bool:
    top = module.split(".")[0]
    return bool(top) and top not in OURS and top not in sys.stdlib_module_names


def private_uses(path: Path) -> list[str]:
    """``file:line what`` for each use of a library's private name in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    bound: set[str] = set()  # local names bound to a third-party module or object
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _third_party(alias.name):
                    continue
                if any(_private(p) for p in alias.name.split(".")):
                    hits.append(f"{where}:{node.lineno} imports {alias.name}")
                bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _third_party(node.module or ""):
            bad = [p for p in node.module.split(".") if _private(p)]
            bad += [a.name for a in node.names if _private(a.name)]
            if bad:
                hits.append(f"{where}:{node.lineno} imports {bad} from {node.module}")
            bound.update(a.asname or a.name for a in node.names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                hits.append(f"{where}:{node.lineno} touches {base.id}...{node.attr}")
    return hits


def test_no_private_library_name_anywhere():
    files = [f for d in SCANNED for f in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 100
    hits = [h for f in files for h in private_uses(f)]
    assert hits == []


def test_scan_catches_each_kind_of_private_use(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import torch._dynamo\n"
        "from datasets.iterable_dataset import _BaseExamplesIterable\n"
        "from accelerate.state import AcceleratorState\n"
        "import numpy as np\n"
        "AcceleratorState._reset_state(True)\n"
        "np.random._bit_generator\n"
        "from pathfm.datasets_scripts import builder\n"
        "builder._private_helper_of_ours\n"
        "np.__version__\n"
    )
    hits = private_uses(probe)
    assert len(hits) == 4, hits
