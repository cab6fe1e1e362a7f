"""Batched DINO multi-crop augmentation on the accelerator (kornia), from uint8 tiles.

Port of ``DataAugmentationDINO`` from facebookresearch/dino ``main_dino.py`` (Caron et al. 2021, Appendix),
run on a whole batch on the training device with *per-sample* random parameters (kornia
``same_on_batch=False``), so that data workers only read and decode slide tiles:

- global crop 1: RandomResizedCrop(224, scale 0.4-1, bicubic), flip 0.5, colour jitter (0.4, 0.4, 0.2, 0.1)
  p 0.8, grayscale p 0.2, Gaussian blur p 1.0;
- global crop 2: same, blur p 0.1, solarisation p 0.2;
- local crops (N, default 8): RandomResizedCrop(96, scale 0.05-0.4), flip/jitter/grayscale, blur p 0.5;
- then [0, 1] and normalisation with the pathfm processor's mean = std = (0.5, 0.5, 0.5) (upstream: ImageNet
  statistics; pathfm follows kaiko's released models).

Optional, not in DINO (``random_rot90``, off by default so the pipeline stays DINO's): every crop is also
turned by k quarter turns, k drawn uniformly from {0, 1, 2, 3} per crop and per tile. With DINO's horizontal
flip (p 0.5) this draws each of the 8 symmetries of the square (rotations by 0/90/180/270 degrees, with or
without a mirror; vertical flips included) with probability 1/8. Tissue on a slide has no up or down, and a
ViT has no built-in rotation invariance: pathology models trained with rotation augmentation are markedly more
invariant to rotated tiles than those trained without (Elphick et al. 2024, "Are the latent representations
of foundation models for pathology invariant to rotation?", arXiv 2412.11938; PathDino's HistoRotate,
Alfasly et al. 2023, arXiv 2311.08359, rotates tiles for the same reason). The turn is applied last, after the
colour and blur ops; the two orders give the same distribution of views, because those ops act on each pixel
or with an isotropic kernel, and the resized-crop's scale and log-uniform aspect ranges are unchanged by a
quarter turn. Its draws come after all of DINO's, from the same torch generator, so under a fixed seed the
turned views are exactly ``torch.rot90`` of the views without the option.

Known numerical differences from upstream (PIL/torchvision): the Gaussian blur uses sigma ~ U(0.1, 2.0) like
PIL's radius, with a fixed kernel of 2 * ceil(3 * 2.0) + 1 = 13 px; solarisation flips values >= 0.5 (PIL:
>= 128/255); bicubic resampling is kornia's and its output is clamped to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
import torch
from torch import Tensor, nn

__all__ = ["DINOMultiCrop"]

_BLUR_KERNEL = 13  # 2 * ceil(3 * sigma_max) + 1 with sigma_max = 2.0 (upstream GaussianBlur radius_max)


def _flip_and_color_jitter() -> list[nn.Module]:
    return [
        K.RandomHorizontalFlip(p=0.5),
        K.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
    ]


def _blur(p: float) -> nn.Module:
    return K.RandomGaussianBlur((_BLUR_KERNEL, _BLUR_KERNEL), sigma=(0.1, 2.0), p=p)


class DINOMultiCrop(nn.Module):
    """DINO multi-crop on a batch of uint8 tiles.

    Args:
        global_crop_size: Side of the global crops in px (224 in DINO).
        local_crop_size: Side of the local crops in px (96 in DINO).
        local_crops_number: Number N of local crops per tile (8 in DINO; 0 allowed).
        global_crops_scale: Area-fraction range of the global crops ((0.4, 1.0) in DINO).
        local_crops_scale: Area-fraction range of the local crops ((0.05, 0.4) in DINO).
        mean: Per-channel normalisation mean (after scaling to [0, 1]).
        std: Per-channel normalisation std.
        random_rot90: Also turn every crop by a random multiple of 90 degrees (see the module docstring;
            not in DINO, False keeps DINO's pipeline).
    """

    def __init__(
        self,
        global_crop_size: int = 224,
        local_crop_size: int = 96,
        local_crops_number: int = 8,
        global_crops_scale: Sequence[float] = (0.4, 1.0),
        local_crops_scale: Sequence[float] = (0.05, 0.4),
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        random_rot90: bool = False,
    ) -> None:
        super().__init__()
        if local_crops_number < 0:
            raise ValueError(f"local_crops_number must be >= 0, got {local_crops_number}")
        self.local_crops_number = local_crops_number
        self.random_rot90 = random_rot90
        g_scale, l_scale = tuple(global_crops_scale), tuple(local_crops_scale)
        self.global1 = K.AugmentationSequential(
            K.RandomResizedCrop((global_crop_size, global_crop_size), scale=g_scale, resample="BICUBIC"),
            *_flip_and_color_jitter(),
            _blur(1.0),
        )
        self.global2 = K.AugmentationSequential(
            K.RandomResizedCrop((global_crop_size, global_crop_size), scale=g_scale, resample="BICUBIC"),
            *_flip_and_color_jitter(),
            _blur(0.1),
            K.RandomSolarize(thresholds=0.0, additions=0.0, p=0.2),
        )
        self.local = K.AugmentationSequential(
            K.RandomResizedCrop((local_crop_size, local_crop_size), scale=l_scale, resample="BICUBIC"),
            *_flip_and_color_jitter(),
            _blur(0.5),
        )
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def ncrops(self) -> int:
        """Total number of views per tile: 2 global + N local."""
        return 2 + self.local_crops_number

    @staticmethod
    def _crop_then_rest(seq: K.AugmentationSequential, x: Tensor) -> Tensor:
        # Resized crop first, clamp the bicubic overshoot, then the colour/blur ops (which expect [0, 1]).
        ops = list(seq.children())
        x = ops[0](x).clamp_(0.0, 1.0)
        for op in ops[1:]:
            x = op(x)
        return x

    @staticmethod
    def quarter_turns(crops: list[Tensor]) -> list[Tensor]:
        """Turn each crop of each tile counter-clockwise by k x 90 degrees, k ~ U{0, 1, 2, 3} independently.

        Args:
            crops: square views, each (B, 3, S, S).

        Returns:
            Views of the same shapes; sample b of view i is ``torch.rot90(crops[i][b], k, dims=(1, 2))``
            (as ``np.rot90`` on an (S, S, 3) image: counter-clockwise on screen).
        """
        # all turns drawn at once on the CPU generator, after every kornia draw of this batch
        turns = torch.randint(0, 4, (len(crops), crops[0].shape[0]))
        out = []
        for view, k_view in zip(crops, turns.tolist(), strict=True):
            turned = view.clone()
            for k in (1, 2, 3):
                picked = [b for b, kb in enumerate(k_view) if kb == k]
                if picked:
                    turned[picked] = torch.rot90(view[picked], k, dims=(2, 3))
            out.append(turned)
        return out

    def _normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    @torch.no_grad()
    def forward(self, tiles: Tensor) -> list[Tensor]:
        """Make the views.

        Args:
            tiles: uint8 tiles, shape (B, 3, H, W), on the training device.

        Returns:
            ``2 + N`` float32 tensors: two global crops (B, 3, G, G) then N local crops (B, 3, L, L),
            normalised with ``mean``/``std``.

        Raises:
            ValueError: If ``tiles`` is not a uint8 (B, 3, H, W) tensor.
        """
        if tiles.dtype != torch.uint8 or tiles.ndim != 4 or tiles.shape[1] != 3:
            raise ValueError(
                f"DINOMultiCrop expects uint8 tiles (B, 3, H, W), got {tiles.dtype} {tuple(tiles.shape)}"
            )
        x = tiles.float().div_(255.0)
        crops = [self._crop_then_rest(self.global1, x), self._crop_then_rest(self.global2, x)]
        crops += [self._crop_then_rest(self.local, x) for _ in range(self.local_crops_number)]
        if self.random_rot90:
            crops = self.quarter_turns(crops)
        return [self._normalize(c.clamp_(0.0, 1.0)) for c in crops]
