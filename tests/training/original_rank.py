"""Run by test_fidelity.py: the original's harness (``$JIT_ORIG_DIR/harness.py``, from ../shared/reference) as
one rank of a gloo group, with one more CPU patch than the reference's own: ``util.misc.all_reduce_mean``,
which only averages the logged loss over the ranks, without its ``.cuda()``. Nothing else is changed.

``RANK=r WORLD_SIZE=n ... JIT_ORIG_DIR=... python original_rank.py <main_jit.py flags>``
"""

import os
import runpy
import sys

REFERENCE = os.environ["JIT_ORIG_DIR"]
sys.path.insert(0, REFERENCE)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import util.misc as misc  # noqa: E402


def all_reduce_mean(value):
    world = misc.get_world_size()
    if world == 1:
        return value
    reduced = torch.tensor(value)
    dist.all_reduce(reduced)
    return (reduced / world).item()


misc.all_reduce_mean = all_reduce_mean
sys.argv = [os.path.join(REFERENCE, "harness.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
