"""Expected values for the DINOv2 tests (sched) from upstream code; see reference_paths.py."""

from reference_paths import DINOV2, OPENMIDNIGHT, OUT, SHIM, TESTS  # noqa: F401
import sys, json

sys.path[:0] = [DINOV2]
from dinov2.utils.utils import CosineScheduler

E, EP = 4, 5  # OFFICIAL_EPOCH_LENGTH, epochs
out = {
    "lr": CosineScheduler(
        0.004 * (64 / 1024) ** 0.5, 1e-6, EP * E, warmup_iters=2 * E, start_warmup_value=0
    ).schedule.tolist(),
    "wd": CosineScheduler(0.04, 0.4, EP * E).schedule.tolist(),
    "momentum": CosineScheduler(0.992, 1.0, EP * E).schedule.tolist(),
}
tt = CosineScheduler(0.07, 0.07, 3 * E, warmup_iters=3 * E, start_warmup_value=0.04)
out["teacher_temp"] = [float(tt[i]) for i in range(EP * E)]
json.dump(out, open(OUT + f"/sched.json", "w"))
for k, v in out.items():
    print(k, v)
