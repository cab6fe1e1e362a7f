"""Block masks against facebookresearch/dinov2 under a fixed seed.

Expected masks were produced by running facebookresearch/dinov2 at commit
b8931f7bf91576930313be2c6d6af376033b35f0 outside pathfm: ``MaskingGenerator`` (dinov2/data/masking.py) built
as dinov2/train/train.py builds it (``max_num_patches = 0.5 * img // patch * img // patch``, patch 14) and
``collate_data_and_cast`` (dinov2/data/collate.py) with ``mask_ratio_tuple=(0.1, 0.5)``,
``mask_probability=0.5``, after ``random.seed(seed)``. pathfm draws from ``random.Random(seed)``: same stream.
The hashes are sha256 of the (n_crops, patches) bool mask's bytes (numpy bool, 1 byte per entry).
"""

import hashlib
import random

import pytest
import torch

from pathfm.training.masking import BlockMaskGenerator, sample_masks

# grid 6 x 6, batch 2 (4 global-crop images): flat indices of the masked entries of the (4, 36) masks
SMALL = {
    0: [51, 52, 53, 57, 58, 59, 63, 64, 65, 91, 92, 93, 94, 97, 98, 99, 100, 102, 103, 104, 105, 106],
    1: [12, 18, 24, 25, 114, 115, 116, 117, 120, 121, 122, 123, 126, 127, 128, 129, 132, 133, 134, 135],
}
# grid 16 x 16 (224 px, patch 14), batch 4 (8 images): (masked per image, sha256 of the masks)
LARGE = {
    0: ([97, 113, 0, 0, 76, 0, 0, 47], "426881748faa94ad816400fe4ab805194dcb88186d6b42a8a035a6ab01241ee4"),
    1: ([84, 55, 114, 0, 0, 0, 28, 0], "bd55eda8bac71477bb7b968c7d4b9e74748c44e886b6fd3a71d710c2c8ce1c80"),
    2: ([0, 81, 119, 0, 57, 50, 0, 0], "77c4cdb1c156653b9c234467b7d21a49601728847036d0ab5170b90da9b85ad4"),
}


@pytest.mark.parametrize("seed", sorted(SMALL))
def test_small_grid_masks_equal_dinov2(seed):
    batch = sample_masks(4, BlockMaskGenerator((6, 6)), random.Random(seed))
    assert batch.masks.shape == (4, 36) and batch.masks.dtype == torch.bool
    assert batch.mask_indices.tolist() == SMALL[seed]
    assert batch.upperbound == 28  # int(36 * 0.3) + int(36 * 0.5)
    per_crop = batch.masks.sum(-1)
    expected_weights = torch.cat([torch.full((int(n),), 1.0 / int(n)) for n in per_crop if n])
    torch.testing.assert_close(batch.masks_weight, expected_weights, rtol=0, atol=0)


@pytest.mark.parametrize("seed", sorted(LARGE))
def test_vit14_grid_masks_equal_dinov2(seed):
    batch = sample_masks(8, BlockMaskGenerator((16, 16)), random.Random(seed))
    per_crop, digest = LARGE[seed]
    assert batch.masks.sum(-1).tolist() == per_crop
    assert hashlib.sha256(batch.masks.numpy().tobytes()).hexdigest() == digest
    assert batch.upperbound == 357
    # half of the images are masked, each within the ratio range 0.1-0.5 of 256 patches
    assert sum(n > 0 for n in per_crop) == 4 and all(n <= 128 for n in per_crop)


def test_zero_target_draws_nothing_and_bad_ratios_fail():
    rng = random.Random(0)
    state = rng.getstate()
    assert not BlockMaskGenerator((4, 4))(0, rng).any()
    assert rng.getstate() == state
    with pytest.raises(ValueError, match="mask_probability"):
        sample_masks(4, BlockMaskGenerator((4, 4)), rng, mask_ratio_min_max=(0.5, 0.1))
