import json

import pytest
import torch

import jitckpt
from jitckpt.layouts.arch import VARIANTS, official
from jitckpt.model.denoiser import Denoiser
from jitckpt.model.jit import JiT
from tests.helpers import FIXTURES, GOLDEN

VARIANT_DATA = json.loads((FIXTURES / "original_variants.json").read_text())


@pytest.mark.parametrize("name", VARIANTS)
def test_network_keys_and_shapes_equal_original(name):
    data = VARIANT_DATA[name]
    with torch.device("meta"):  # no memory, no init: only names and shapes
        denoiser = Denoiser(official(name, img_size=data["img_size"]))
    state = denoiser.state_dict()
    assert [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()] == \
        [tuple(entry) for entry in data["state_dict"]]
    assert [n for n, p in denoiser.named_parameters() if p.requires_grad] == data["trainable_order"]
    assert sum(p.numel() for p in denoiser.parameters()) == data["num_params"]


@pytest.mark.parametrize("method", ["heun", "euler"])
def test_golden_samples_reproduced(method):
    golden = jitckpt.load(GOLDEN)
    samples = torch.load(FIXTURES / "samples_ema1.pt")
    settings = samples["settings"]
    args = {**golden.args, "num_sampling_steps": settings["num_sampling_steps"], "cfg": settings["cfg"],
            "interval_min": settings["interval"][0], "interval_max": settings["interval"][1],
            "noise_scale": settings["noise_scale"], "sampling_method": method}
    denoiser = Denoiser.from_args(args, arch=golden.arch)
    denoiser.load_state_dict(golden.model_ema1)
    denoiser.eval()
    torch.manual_seed(samples["seed"])
    images = denoiser.generate(samples["labels"])
    assert (images - samples[method]).abs().max().item() < 1e-5


def test_custom_dimensions_run_forward_and_loss():
    arch = jitckpt.load(GOLDEN, lazy=True).arch
    net = JiT(arch)
    x, t, y = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([1, 10])
    assert net(x, t, y).shape == (2, 3, 16, 16)
    denoiser = Denoiser(arch)
    loss = denoiser(x, torch.tensor([0, 3]))
    loss.backward()
    assert torch.isfinite(loss) and denoiser.net.blocks[0].attn.qkv.weight.grad is not None
