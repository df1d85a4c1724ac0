"""The golden checkpoint through every format and back: every tensor bit for bit."""

import itertools

import pytest
import torch

import jitckpt
from jitckpt.api import iter_tensors
from tests.helpers import load_golden_torch

FORMATS = {"pth": ".pth", "ckpt": ".ckpt", "safetensors": ".safetensors"}


def assert_same_as_golden(ckpt):
    golden = load_golden_torch()
    for section in ("model", "model_ema1", "model_ema2"):
        ours = getattr(ckpt, section)
        assert list(ours) == list(golden[section])
        for key, tensor in golden[section].items():
            assert ours[key].dtype == tensor.dtype and torch.equal(ours[key], tensor), (section, key)
    positional = jitckpt.schema.optimizer_to_positional(ckpt.optimizer)
    assert positional["param_groups"] == golden["optimizer"]["param_groups"]
    for index, state in golden["optimizer"]["state"].items():
        for slot, tensor in state.items():
            assert torch.equal(positional["state"][index][slot], tensor) and positional["state"][index][slot].dtype == tensor.dtype
    assert ckpt.epoch == golden["epoch"] == 1
    assert ckpt.args == vars(golden["args"])


@pytest.mark.parametrize("first,second", list(itertools.permutations(FORMATS, 2)) + [("pth", "pth")])
def test_golden_through_two_formats_and_back(golden, tmp_path, first, second):
    a = jitckpt.convert(golden, tmp_path / f"a{FORMATS[first]}")
    b = jitckpt.convert(a, tmp_path / f"b{FORMATS[second]}")
    c = jitckpt.convert(b, tmp_path / "c.pth")
    assert jitckpt.detect_format(a) == first and jitckpt.detect_format(b) == second
    for path in (a, b, c):
        assert_same_as_golden(jitckpt.load(path))
    assert jitckpt.compare(jitckpt.load(golden, lazy=True), jitckpt.load(c, lazy=True)) == []


def test_bfloat16_and_int_tensors_survive(tmp_path, golden):
    ckpt = jitckpt.load(golden)
    ckpt.model_ema2 = {k: v.to(torch.bfloat16) for k, v in ckpt.model_ema2.items()}
    ckpt.extra["counts"] = torch.arange(5, dtype=torch.int64)
    for suffix in FORMATS.values():
        path = jitckpt.save(ckpt, tmp_path / f"x{suffix}")
        back = jitckpt.load(path)
        assert all(back.model_ema2[k].dtype == torch.bfloat16 and torch.equal(back.model_ema2[k], v)
                   for k, v in ckpt.model_ema2.items())
        assert torch.equal(back.extra["counts"], ckpt.extra["counts"])


def _bytes_read() -> int:
    """Bytes this process has read through read system calls so far (Linux's /proc/self/io ``rchar``)."""
    with open("/proc/self/io") as stats:
        return next(int(line.split()[1]) for line in stats if line.startswith("rchar:"))


def test_lazy_load_reads_nothing_until_asked(golden):
    jitckpt.load(golden, lazy=True)  # the modules a load imports are read now, not below
    before = _bytes_read()
    ckpt = jitckpt.load(golden, lazy=True)
    spent = _bytes_read() - before
    refs = [t for _, t in iter_tensors(ckpt)]
    assert refs and all(isinstance(t, jitckpt.tensors.lazy.TensorRef) for t in refs)
    assert len(refs) == 57 * 3 + 56 * 3
    tensor_bytes = sum(t.nbytes for t in refs)
    # the pickle (46,605 bytes), the end record's search window (65,557: a zip comment may be 64 KiB), the
    # central directory (under 32 KiB here) and 345 local headers: not one of the 3 MB of tensor bytes
    bound = 46_605 + 65_557 + 32 * 1024 + 345 * 64
    assert spent <= bound < tensor_bytes / 15, (spent, bound, tensor_bytes)
    biggest = max(refs, key=lambda t: t.nbytes)
    before = _bytes_read()
    biggest.to_torch()
    assert biggest.nbytes <= _bytes_read() - before <= biggest.nbytes + 64 * 1024  # its bytes, checked, and no more
