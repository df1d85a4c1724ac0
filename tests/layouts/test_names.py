import pytest

from jitckpt.errors import KeyMappingError
from jitckpt.layouts import canonical_key, normalize_keys


@pytest.mark.parametrize(
    "key",
    [
        "net.blocks.0.attn.qkv.weight",
        "_orig_mod.net.blocks.0.attn.qkv.weight",  # torch.compile'd Denoiser
        "net._orig_mod.blocks.0.attn.qkv.weight",  # compiled network inside the Denoiser
        "module.net.blocks.0.attn.qkv.weight",  # DDP
        "module._orig_mod.net.blocks.0.attn.qkv.weight",  # DDP over compile
        "model.net.blocks.0.attn.qkv.weight",  # LightningModule holding the Denoiser as .model
        "blocks.0.attn.qkv.weight",  # a bare JiT network
    ],
)
def test_wrapped_keys_map_to_canonical(key):
    assert canonical_key(key) == "net.blocks.0.attn.qkv.weight"


def test_normalize_keeps_order_and_values():
    state = {"module.net.pos_embed": 1, "module.net.blocks.0.norm1.weight": 2}
    assert list(normalize_keys(state).items()) == [("net.pos_embed", 1), ("net.blocks.0.norm1.weight", 2)]


def test_ambiguous_mapping_names_both_keys():
    with pytest.raises(KeyMappingError) as info:
        normalize_keys({"net.pos_embed": 1, "_orig_mod.net.pos_embed": 2})
    assert "'net.pos_embed'" in str(info.value) and "'_orig_mod.net.pos_embed'" in str(info.value)
