import json

import pytest

from jitckpt.errors import SchemaError
from jitckpt.layouts.arch import VARIANTS, count_params, expected_shapes, infer_arch, official, trainable_names
from jitckpt.layouts.groupings import ORIGINAL
from tests.helpers import FIXTURES

VARIANT_DATA = json.loads((FIXTURES / "original_variants.json").read_text())


@pytest.mark.parametrize("name", VARIANTS)
def test_official_layout_equals_original(name):
    data = VARIANT_DATA[name]
    shapes = {key: tuple(shape) for key, shape, _ in data["state_dict"]}
    arch = official(name, img_size=data["img_size"])
    assert list(expected_shapes(arch).items()) == list(shapes.items())
    assert trainable_names(arch) == data["trainable_order"]
    assert count_params(shapes) == data["num_params"]


@pytest.mark.parametrize("name", VARIANTS)
def test_infer_names_official_variant(name):
    data = VARIANT_DATA[name]
    shapes = {key: tuple(shape) for key, shape, _ in data["state_dict"]}
    arch, warnings = infer_arch(shapes, model_name=name)
    assert arch == official(name, img_size=data["img_size"])
    assert warnings == []


def test_infer_custom_dimensions_of_golden_model():
    # JiT-T/4 of the fixtures: depth 3, width 48, 4 heads, bottleneck 8, 4 in-context tokens, 10 classes, 16 px
    arch = official("JiT-B/16")
    shapes = expected_shapes(arch.__class__(3, 48, 4, 4, 8, 4, 1, 10, 16))
    inferred, _ = infer_arch(shapes)
    assert (inferred.depth, inferred.hidden_size, inferred.num_heads, inferred.patch_size) == (3, 48, 4, 4)
    assert (inferred.bottleneck_dim, inferred.in_context_len, inferred.num_classes, inferred.img_size) == (8, 4, 10, 16)
    assert inferred.variant is None


def test_args_model_disagreeing_with_shapes_is_reported():
    data = VARIANT_DATA["JiT-L/16"]
    shapes = {key: tuple(shape) for key, shape, _ in data["state_dict"]}
    _, warnings = infer_arch(shapes, model_name="JiT-B/16")
    assert warnings == ["args.model is 'JiT-B/16' but the tensor shapes are those of JiT-L/16"]


def test_param_groups_follow_add_weight_decay():
    no_decay, decay = ORIGINAL.names(official("JiT-B/16"))
    assert all(VARIANT_DATA["JiT-B/16"]["trainable_order"].index(n) >= 0 for n in no_decay + decay)
    assert "net.blocks.0.attn.qkv.bias" in no_decay and "net.blocks.0.attn.q_norm.weight" in no_decay
    assert "net.blocks.0.attn.qkv.weight" in decay and "net.pos_embed" not in no_decay + decay


def test_not_a_jit_state_dict_names_missing_key():
    with pytest.raises(SchemaError, match="net.pos_embed"):
        infer_arch({"net.something": (3,)})
