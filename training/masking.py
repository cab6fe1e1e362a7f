"""iBOT block masks for the student's global crops, as DINOv2 draws them.

``BlockMaskGenerator`` is the BEiT-style block masking of facebookresearch/dinov2 ``dinov2/data/masking.py``
(``MaskingGenerator``; Bao et al. 2022, BEiT Sec. 2.5 / Algorithm 1) and ``sample_masks`` the per-batch part
of ``collate_data_and_cast`` (``dinov2/data/collate.py``): a fraction ``mask_probability`` (0.5) of the
global-crop images gets a mask, the i-th of them a ratio drawn uniformly in the i-th of equal slices of
``mask_ratio_min_max`` (0.1, 0.5), the others none, then the list is shuffled.

Seeding: upstream draws from Python's global ``random`` module. Here every draw goes to a ``random.Random``
passed in, in the same order and with the same calls (``uniform``, ``randint``, ``shuffle``), so
``random.Random(seed)`` here yields exactly the masks upstream yields after ``random.seed(seed)`` (the two
share one Mersenne-Twister stream definition). The training loop owns one generator per rank seeded from
(seed, rank) and saves its ``getstate()`` with the checkpoint so a resumed run draws the same masks. The slice
bounds are float32 (upstream uses ``torch.linspace``), so the mask sizes also match bit for bit.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from torch import Tensor

from .losses.ibot import masked_patch_weights

__all__ = ["BlockMaskGenerator", "MaskBatch", "MaskSampler", "sample_masks"]


class BlockMaskGenerator:
    """Draw a (rows, cols) bool mask made of random rectangles covering a requested number of patches.

    Args:
        grid: (rows, cols) patch grid of a global crop (e.g. (16, 16) for 224 px / patch 14).
        min_num_patches: Smallest rectangle area tried (4 as upstream).
        max_num_patches: Largest rectangle area; DINOv2's train.py passes half the grid.
        min_aspect: Smallest rectangle aspect ratio (0.3); the largest is ``1 / min_aspect``.
    """

    def __init__(
        self, grid: tuple[int, int], min_num_patches: int = 4, max_num_patches: float | None = None,
        min_aspect: float = 0.3,
    ) -> None:
        self.rows, self.cols = grid
        self.min_num_patches = min_num_patches
        self.max_num_patches = 0.5 * self.rows * self.cols if max_num_patches is None else max_num_patches
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def _add_block(self, mask: Tensor, budget: float, rng: random.Random) -> int:
        """Try up to 10 rectangles; paint the first one that adds new patches within ``budget``."""
        for _ in range(10):
            area = rng.uniform(self.min_num_patches, budget)
            aspect = math.exp(rng.uniform(*self.log_aspect))
            height = int(round(math.sqrt(area * aspect)))
            width = int(round(math.sqrt(area / aspect)))
            if width >= self.cols or height >= self.rows:
                continue
            top = rng.randint(0, self.rows - height)
            left = rng.randint(0, self.cols - width)
            block = mask[top : top + height, left : left + width]
            added = height * width - int(block.sum())
            if 0 < added <= budget:
                block.fill_(True)
                return added
        return 0

    def __call__(self, num_masking_patches: int, rng: random.Random) -> Tensor:
        """Bool (rows, cols) mask with at most ``num_masking_patches`` True entries (fewer when 10 tries
        fail).

        Args:
            num_masking_patches: Target number of masked patches (0 gives an empty mask, no draws).
            rng: Source of randomness (advanced in upstream's order).
        """
        mask = torch.zeros(self.rows, self.cols, dtype=torch.bool)
        count = 0
        while count < num_masking_patches:
            budget = min(num_masking_patches - count, self.max_num_patches)
            added = self._add_block(mask, budget, rng)
            if added == 0:
                break
            count += added
        return mask


@dataclass
class MaskBatch:
    """Masks of one batch of global crops and what the losses need from them.

    Attributes:
        masks: Bool (n_crops, rows * cols), crop-major like the global crops (``bool_masked_pos``).
        mask_indices: (M,) int64 indices of the True entries of ``masks.flatten()``.
        masks_weight: (M,) float32 ``1 / max(masked patches of the crop, 1)`` per masked patch.
        upperbound: Upstream's static buffer size for masked patches (sum of the slice maxima).
    """

    masks: Tensor
    mask_indices: Tensor
    masks_weight: Tensor
    upperbound: int


def sample_masks(
    n_crops: int, generator: BlockMaskGenerator, rng: random.Random, mask_probability: float = 0.5,
    mask_ratio_min_max: tuple[float, float] = (0.1, 0.5),
) -> MaskBatch:
    """Masks for ``n_crops`` global-crop images (2 * batch), as DINOv2's collate.

    Args:
        n_crops: Number of global-crop images in the batch.
        generator: Block generator for the crop's patch grid.
        rng: Source of randomness.
        mask_probability: Fraction of images that get a mask (``ibot.mask_sample_probability``).
        mask_ratio_min_max: Range of masked-patch ratios (``ibot.mask_ratio_min_max``).

    Returns:
        A ``MaskBatch``.

    Raises:
        ValueError: If the probability or ratios are outside [0, 1].
    """
    low, high = mask_ratio_min_max
    if not (0 <= mask_probability <= 1 and 0 <= low <= high <= 1):
        raise ValueError(
            "sample_masks: need 0 <= mask_probability <= 1 and 0 <= min <= max <= 1, "
            f"got {mask_probability}, "
            f"{mask_ratio_min_max}"
        )
    num_patches = generator.rows * generator.cols
    n_masked_crops = int(n_crops * mask_probability)
    # float32 slice bounds and arithmetic, as upstream's torch.linspace values
    bounds = torch.linspace(low, high, n_masked_crops + 1)
    masks, upperbound = [], 0
    for i in range(n_masked_crops):
        ratio = rng.uniform(bounds[i], bounds[i + 1])
        masks.append(generator(int(num_patches * ratio), rng))
        upperbound += int(num_patches * bounds[i + 1])
    masks += [generator(0, rng) for _ in range(n_crops - n_masked_crops)]
    rng.shuffle(masks)
    flat = torch.stack(masks).flatten(1)
    return MaskBatch(flat, flat.flatten().nonzero().flatten(), masked_patch_weights(flat), upperbound)


class MaskSampler:
    """This rank's iBOT mask source: a block generator for the global-crop grid and its own ``random.Random``.

    The generator state is what a resumed run needs to draw the same masks again: ``state_dict`` /
    ``load_state_dict`` (JSON-safe) are saved per rank with each checkpoint
    (``checkpointing.save_checkpoint``).

    Args:
        grid: (rows, cols) patch grid of a global crop.
        seed: Run seed; the stream is seeded from (seed, rank) so ranks draw different masks.
        rank: Process index.
        mask_probability: ``ibot.mask_sample_probability`` (0.5).
        mask_ratio_min_max: ``ibot.mask_ratio_min_max`` (0.1, 0.5).
    """

    def __init__(
        self, grid: tuple[int, int], seed: int, rank: int, mask_probability: float = 0.5,
        mask_ratio_min_max: tuple[float, float] = (0.1, 0.5),
    ) -> None:
        # dinov2 train.py: max_num_patches = half the grid
        self.generator = BlockMaskGenerator(grid, max_num_patches=0.5 * grid[0] * grid[1])
        self.rng = random.Random(seed * 1_000_003 + rank)
        self.mask_probability = mask_probability
        self.mask_ratio_min_max = tuple(mask_ratio_min_max)

    def __call__(self, n_crops: int) -> MaskBatch:
        """Masks of ``n_crops`` global-crop images (2 * B), on the CPU (the step moves what the device
        needs)."""
        return sample_masks(n_crops, self.generator, self.rng, self.mask_probability, self.mask_ratio_min_max)

    def state_dict(self) -> dict:
        """The generator's ``random.Random`` state as JSON-safe lists."""
        version, internal, gauss = self.rng.getstate()
        return {"rng": [version, list(internal), gauss]}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
