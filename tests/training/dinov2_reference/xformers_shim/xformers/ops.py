# Minimal stand-in for the one xformers helper SSLMetaArch uses around its head: run the head once on
# token lists concatenated along dim 1 and split the result back (what BlockDiagonalMask does for an MLP).
import torch


class _Bias:
    def __init__(self, sizes):
        self.sizes = sizes

    def split(self, x):
        return list(torch.split(x, self.sizes, dim=1))


class BlockDiagonalMask:
    @staticmethod
    def from_tensor_list(tensors):
        return _Bias([t.shape[1] for t in tensors]), torch.cat(tensors, dim=1)


class fmha:
    BlockDiagonalMask = BlockDiagonalMask
