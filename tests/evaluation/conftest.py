"""Evaluation tests shrink the Inception's input from 299 to 75 pixels (its minimum)
to stay fast on a CPU, and may forbid the network."""

import pytest
from torch_fidelity import feature_extractor_inceptionv3 as fe


@pytest.fixture(autouse=True)
def small_inception_input(monkeypatch):
    monkeypatch.setattr(fe.FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 75)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(fe, "load_state_dict_from_url", refuse)


@pytest.fixture(autouse=True)
def empty_torch_home(tmp_path_factory, monkeypatch):
    """torch's hub cache in an empty folder, so the user's real cache (where torch-fidelity may have put the
    Inception weights) does not change what the tests see."""
    home = tmp_path_factory.mktemp("torch-home")
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("TORCH_HUB", raising=False)
    monkeypatch.delenv("JITCKPT_INCEPTION_WEIGHTS", raising=False)
    return home
