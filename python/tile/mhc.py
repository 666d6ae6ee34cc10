"""``tile.mhc``: the mHC site as torch autograd functions — NOT YET IMPLEMENTED.

Issue 21's GPU part (``MhcSite`` / ``HcSite`` as ``torch.nn.Module``s whose
forward and backward run the pack's kernels) needs a GPU and torch to build
and test; see docs/PYTHON.md.
"""

raise ImportError(
    "tile.mhc is not implemented yet (issue 21, the GPU part); "
    "tile.Pack launches any kernel of a pack, see docs/PYTHON.md"
)
