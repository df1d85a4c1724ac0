import shutil
from pathlib import Path

import pytest
import torch

from jitckpt.evaluation.fid_helper import fidelity_skeleton
from tests.helpers import GOLDEN


@pytest.fixture
def golden(tmp_path: Path) -> Path:
    """A private copy of the golden original checkpoint (tests may write beside it)."""
    path = tmp_path / "checkpoint-last.pth"
    shutil.copyfile(GOLDEN, path)
    return path


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    """A randomly initialised InceptionV3 of torch-fidelity's exact architecture, saved to a file.

    The real loading code runs on it; only the weights are not the published ones.
    """
    path = tmp_path_factory.mktemp("inception") / "inception-random.pth"
    torch.manual_seed(0)
    model = fidelity_skeleton()
    for module in model.modules():  # variance-preserving init, so features differ between images
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.nn.init.normal_(model.fc.weight, std=0.05)
    torch.save(model.state_dict(), path)
    return path


def pytest_addoption(parser):
    """``--hostile-full``: run the full hostile-input corpus in tests/hostile (thousands of inputs)."""
    parser.addoption("--hostile-full", action="store_true", default=False,
                     help="run the full hostile-input corpus (tests/hostile), not the default few hundred inputs")
