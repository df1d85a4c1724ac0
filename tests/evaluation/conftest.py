"""A randomly initialised InceptionV3 of torch-fidelity's exact architecture, saved to a file.

The real loading code runs on it; only the weights are not the published ones.
The extractor's input is shrunk from 299 to 75 pixels (its minimum) to keep
the tests fast on a CPU.
"""

import pytest
import torch
from torch_fidelity import feature_extractor_inceptionv3 as fe


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "inception-random.pth"
    real_load = fe.FeatureExtractorInceptionV3.load_state_dict
    fe.FeatureExtractorInceptionV3.load_state_dict = lambda self, state, *a, **k: None  # keep the random init
    real_url = fe.load_state_dict_from_url
    fe.load_state_dict_from_url = lambda *a, **k: {}  # never the network
    try:
        torch.manual_seed(0)
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        fe.FeatureExtractorInceptionV3.load_state_dict = real_load
        fe.load_state_dict_from_url = real_url
    for module in model.modules():  # variance-preserving init, so features differ between images
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.nn.init.normal_(model.fc.weight, std=0.05)
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(autouse=True)
def small_inception_input(monkeypatch):
    monkeypatch.setattr(fe.FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 75)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(fe, "load_state_dict_from_url", refuse)
