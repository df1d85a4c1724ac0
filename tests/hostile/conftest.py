"""Fixtures of the hostile-input corpus: the pristine bases and the corpus size."""

from __future__ import annotations

import shutil

import pytest

from .bases import make_bases
from .corpus import build_corpus, full_requested


@pytest.fixture(scope="module")
def hostile_bases(tmp_path_factory):
    """The four pristine bases (golden .pth, its .ckpt and .safetensors conversions, a foreign safetensors)."""
    folder = tmp_path_factory.mktemp("hostile-bases")
    yield make_bases(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def hostile_items(hostile_bases):
    """The default corpus, by name (for the focused tests)."""
    return {item.name: item for item in build_corpus(hostile_bases)}


@pytest.fixture
def hostile_full(request) -> bool:
    """True with ``pytest --hostile-full`` or ``JITCKPT_HOSTILE_FULL=1``."""
    try:
        option = bool(request.config.getoption("--hostile-full"))
    except ValueError:  # the option is declared in tests/conftest.py; absent if run from elsewhere
        option = False
    return full_requested(option)
