"""``from_pretrained`` of a local folder, a URL (served on 127.0.0.1) and a Hub repo id (huggingface_hub stood in
for by a module that serves a local folder, so that nothing is downloaded)."""

from __future__ import annotations

import shutil
import sys
import types

import pytest
import torch

from jitckpt.errors import JiTCheckpointError
from jitckpt.model import from_pretrained
from jitckpt.model.hub import HUB_FILES, resolve_pretrained
from jitckpt.model.jit import JiT
from jitckpt.publishing.export import export
from tests.helpers import GOLDEN
from tests.remote_server import serving


@pytest.fixture
def exported(tmp_path):
    (tmp_path / "served").mkdir()
    return export(GOLDEN, tmp_path / "served" / "JiT-T-4", "ema1", samples=False)[0]


def test_a_url_loads_what_the_local_folder_loads(exported):
    local = JiT.from_pretrained(str(exported))
    with serving(exported.parent) as (_, base):
        remote = JiT.from_pretrained(f"{base}/JiT-T-4")
        denoiser = from_pretrained(f"{base}/JiT-T-4")
    assert all(torch.equal(a, b) for a, b in zip(local.state_dict().values(), remote.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(local.state_dict().values(), denoiser.net.state_dict().values()))


def test_a_repo_id_without_huggingface_hub_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(JiTCheckpointError, match=r"as a Hub repo id it needs huggingface_hub: pip install 'jitckpt\[hub\]'"):
        from_pretrained("someone/JiT-B-16")


def test_a_repo_id_is_fetched_into_the_hubs_cache_with_only_the_files_needed(exported, tmp_path, monkeypatch):
    asked = {}

    def snapshot_download(repo_id, revision=None, cache_dir=None, allow_patterns=None):
        asked.update(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns)
        snapshot = tmp_path / "hub-cache" / repo_id.replace("/", "--")
        shutil.copytree(exported, snapshot, dirs_exist_ok=True)
        return str(snapshot)

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=snapshot_download))
    denoiser = from_pretrained("someone/JiT-T-4", revision="v1")
    assert asked == {"repo_id": "someone/JiT-T-4", "revision": "v1", "allow_patterns": HUB_FILES}
    local = JiT.from_pretrained(str(exported))
    assert all(torch.equal(a, b) for a, b in zip(local.state_dict().values(), denoiser.net.state_dict().values()))


def test_a_local_path_that_looks_like_a_repo_id_stays_local(exported, monkeypatch):
    monkeypatch.chdir(exported.parent.parent)
    assert resolve_pretrained("served/JiT-T-4") == "served/JiT-T-4"  # no Hub is asked
