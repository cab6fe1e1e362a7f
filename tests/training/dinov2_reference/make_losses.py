"""Expected values for the DINOv2 tests (losses) from upstream code; see reference_paths.py."""

from reference_paths import DINOV2, OPENMIDNIGHT, OUT, SHIM, TESTS  # noqa: F401
# Reference values from facebookresearch/dinov2 (run outside pathfm).
import json, sys, os

sys.path[:0] = [DINOV2, TESTS]
import torch, torch.distributed as dist
from dinov2.loss import DINOLoss, iBOTPatchLoss, KoLeoLoss
from dinov2_inputs import wave

os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", "29555")
out = {}
B, K, NL = 3, 7, 2
tt = 0.05
t_out = wave(2 * B, K, 0.3, 0.2)  # teacher head logits, crop order [g0; g1]
s_glob = wave(2 * B, K, 1.1, 0.3)
s_loc = wave(NL * B, K, 2.3, 0.3)


def swap(x):
    c = x.chunk(2)
    return torch.cat((c[1], c[0]))


# --- SK single process (no dist) on the CLS path
loss = DINOLoss(K)
sk = loss.sinkhorn_knopp_teacher(swap(t_out), tt)  # swapped as ssl_meta_arch
out["sk_cls_swapped"] = sk.tolist()


# --- DINO CLS loss, sinkhorn and centering (2 steps for the center)
def cls_terms(loss, targets, s_glob, s_loc, nl):
    tl = targets.view(2, -1, K)
    n_g, n_l = 2, max(nl * 2, 1)
    local = loss(list(s_loc.chunk(nl)), tl) / (n_g + n_l) if nl else torch.tensor(0.0)
    glob = loss([s_glob], [tl.flatten(0, 1)]) * 2 / (n_g + n_l)
    return float(local), float(glob)


out["cls_sk"] = cls_terms(loss, sk, s_glob, s_loc, NL)
out["cls_sk_nolocal"] = cls_terms(loss, sk, s_glob, None, 0)
loss_c = DINOLoss(K)
steps = []
for step in range(3):
    t = wave(2 * B, K, 0.3 + step, 0.2)
    targets = loss_c.softmax_center_teacher(swap(t), teacher_temp=tt)
    loss_c.update_center(swap(t))
    steps.append(cls_terms(loss_c, targets, s_glob, s_loc, NL))
loss_c.apply_center_update()
out["cls_center_steps"] = steps
out["cls_center_final"] = loss_c.center.flatten().tolist()
# --- iBOT forward_masked, crops with no mask, both centerings
N = 6
masks = torch.zeros(2 * B, N, dtype=torch.bool)
masks[0, [1, 2, 5]] = True
masks[3, [0]] = True
masks[4, [0, 1, 2, 3, 4, 5]] = True  # crops 1, 2, 5 unmasked
M = int(masks.sum())
tp = wave(M, K, 0.7, 0.2)
sp = wave(M, K, 1.9, 0.3)
ib = iBOTPatchLoss(K)
mw = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
ibot_steps = []
for step in range(3):
    t = wave(M, K, 0.7 + step, 0.2).unsqueeze(0)
    tc = ib.softmax_center_teacher(t[:, :M], teacher_temp=tt).squeeze(0)
    ib.update_center(t[:M])
    ibot_steps.append(
        float(ib.forward_masked(sp, tc, student_masks_flat=masks, n_masked_patches=M, masks_weight=mw))
    )
ib.apply_center_update()
out["ibot_center_steps"] = ibot_steps
out["ibot_center_final"] = ib.center.flatten().tolist()
out["ibot_default_weight"] = float(
    ib.forward_masked(sp, torch.softmax(tp / tt, -1), student_masks_flat=masks)
)
# iBOT SK needs an initialised process group upstream (unguarded all_reduce): world size 1, gloo
dist.init_process_group("gloo", rank=0, world_size=1)
sk_p = ib.sinkhorn_knopp_teacher(tp, tt, n_masked_patches_tensor=torch.full((1,), M, dtype=torch.long))
out["ibot_sk_targets"] = sk_p.tolist()
out["ibot_sk_loss"] = float(
    ib.forward_masked(sp, sk_p, student_masks_flat=masks, n_masked_patches=M, masks_weight=mw)
)
dist.destroy_process_group()
# --- KoLeo
ko = KoLeoLoss()
x = wave(8, 5, 0.2, 1.5)
out["koleo_8x5"] = float(ko(x))
cls = wave(2 * 4, 5, 0.9, 1.0)
out["koleo_per_crop"] = float(sum(ko(p) for p in cls.chunk(2)))
json.dump(out, open(OUT + f"/losses.json", "w"), indent=1)
print(json.dumps(out)[:3000])
