import shutil
from pathlib import Path

import pytest

from tests.helpers import GOLDEN


@pytest.fixture
def golden(tmp_path: Path) -> Path:
    """A private copy of the golden original checkpoint (tests may write beside it)."""
    path = tmp_path / "checkpoint-last.pth"
    shutil.copyfile(GOLDEN, path)
    return path
