"""Expected values for the DINOv2 tests (masks) from upstream code; see reference_paths.py."""

from reference_paths import DINOV2, OPENMIDNIGHT, OUT, SHIM, TESTS  # noqa: F401
import hashlib, json, random, sys

sys.path[:0] = [DINOV2]
import torch
from dinov2.data.masking import MaskingGenerator
from dinov2.data.collate import collate_data_and_cast

out = {}


def run(grid, n_images, seed, img=None):
    patch = 14
    img = grid * patch
    gen = MaskingGenerator(input_size=(grid, grid), max_num_patches=0.5 * img // patch * img // patch)
    samples = [
        ({"global_crops": [torch.zeros(1), torch.zeros(1)], "local_crops": [torch.zeros(1)]}, None)
        for _ in range(n_images)
    ]
    random.seed(seed)
    r = collate_data_and_cast(
        samples, (0.1, 0.5), 0.5, torch.float32, n_tokens=grid * grid, mask_generator=gen
    )
    m = r["collated_masks"]
    return {
        "indices": m.flatten().nonzero().flatten().tolist(),
        "sha256": hashlib.sha256(m.numpy().tobytes()).hexdigest(),
        "shape": list(m.shape),
        "upperbound": r["upperbound"],
        "weight_sum": float(r["masks_weight"].sum()),
        "per_crop": m.sum(-1).tolist(),
    }


for seed in (0, 1):
    out[f"g6_b2_s{seed}"] = run(6, 2, seed)
for seed in (0, 1, 2):
    out[f"g16_b4_s{seed}"] = run(16, 4, seed)
json.dump(out, open(OUT + f"/masks.json", "w"))
for k, v in out.items():
    print(k, v["shape"], v["upperbound"], v["per_crop"], v["sha256"], len(v["indices"]))
print(out["g6_b2_s0"]["indices"], out["g6_b2_s1"]["indices"])
