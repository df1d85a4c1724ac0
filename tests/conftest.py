import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jitckpt.evaluation.inception import write_random_weights
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
    return write_random_weights(tmp_path_factory.mktemp("inception") / "inception-random.pth")


@pytest.fixture(scope="session")
def example_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``jitckpt example`` run once, as a user would, in a fresh folder: (that folder, the finished process).

    The README's commands continue in the same folder (tests/test_readme.py); tests only read what it wrote.
    """
    folder = tmp_path_factory.mktemp("readme")
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
           "COLUMNS": "100", "TORCH_HOME": str(folder / "empty-torch-home")}
    env.pop("JITCKPT_INCEPTION_WEIGHTS", None)
    done = subprocess.run(["jitckpt", "example"], cwd=folder, env=env, capture_output=True, text=True)
    return folder, done


def pytest_addoption(parser):
    """``--hostile-full``: run the full hostile-input corpus in tests/hostile (thousands of inputs)."""
    parser.addoption("--hostile-full", action="store_true", default=False,
                     help="run the full hostile-input corpus (tests/hostile), not the default few hundred inputs")
