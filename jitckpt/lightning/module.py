"""``JiTLightningModule``: the original training step, optimizer and sampler under Lightning."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import lightning as L
import torch

from ..errors import JiTCheckpointError
from ..layouts.arch import Arch, expected_shapes, official
from .stream import OriginalStream, check_random_stream, flip_images
from ..model.denoiser import DiffusionConfig, diffusion_loss, generate
from ..layouts.groupings import ORIGINAL, ORIGINAL_BETAS
from ..model.jit import JiT



def add_weight_decay(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """The original param groups (:data:`jitckpt.layouts.groupings.ORIGINAL`, the one copy of the rule): no decay
    (1-D tensors and biases) first, then decay; frozen ones left out."""
    groups: list[list[torch.nn.Parameter]] = [[] for _ in ORIGINAL.decays]
    for name, param in module.named_parameters():
        if param.requires_grad:
            groups[ORIGINAL.group_of(name, tuple(param.shape))].append(param)
    return [{"params": params, "weight_decay": weight_decay if decays else 0.0}
            for params, decays in zip(groups, ORIGINAL.decays)]


class JiTLightningModule(L.LightningModule):
    """JiT trained as the original ``main_jit.py`` trains it.

    The network is ``self.net``, so state-dict keys are the canonical ``net.``
    keys of the original Denoiser. Images arrive as uint8 and are mapped to
    [-1, 1]. The absolute LR is ``learning_rate`` if given, else ``blr`` times
    the effective batch size (batch x devices x nodes x accumulation) / 256.
    ``arch`` (an :class:`Arch`, such as a loaded checkpoint's ``.arch``, or a dict of its fields) builds
    non-official dimensions.

    ``random_stream`` says where the training's random numbers come from. ``"per_batch"``: a generator
    seeded with ``(seed, epoch, batch, rank)`` for each batch, so an interrupted and resumed run draws
    exactly what an uninterrupted one does, and ranks draw differently. ``"original"``: the original's
    own stream, replayed (:mod:`.stream`): with :class:`JiTDataModule` of the same ``random_stream``
    (which leaves the flips to this module and orders the data as the original's sampler does), a
    run on a CPU continues a checkpoint bit for bit as the original's ``main_jit.py`` does.
    """

    def __init__(
        self,
        model_name: str = "JiT-B/16",
        img_size: int = 256,
        num_classes: int = 1000,
        attn_dropout: float = 0.0,
        proj_dropout: float = 0.0,
        learning_rate: float | None = None,
        blr: float = 5e-5,
        weight_decay: float = 0.0,
        ema_decay1: float = 0.9999,
        ema_decay2: float = 0.9996,
        P_mean: float = -0.8,
        P_std: float = 0.8,
        noise_scale: float = 1.0,
        t_eps: float = 5e-2,
        label_drop_prob: float = 0.1,
        sampling_method: str = "heun",
        num_sampling_steps: int = 50,
        cfg_scale: float = 1.0,
        cfg_interval: Sequence[float] = (0.0, 1.0),
        arch: Arch | Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        compile: bool = False,
        random_stream: str = "per_batch",
    ) -> None:
        super().__init__()
        if isinstance(arch, Arch):  # a checkpoint's ``.arch``: kept in the hyperparameters as plain data
            arch = arch.to_dict()
        self.save_hyperparameters()
        self.arch = Arch.from_dict(arch) if arch is not None else official(model_name, img_size, num_classes)
        if (self.arch.img_size, self.arch.num_classes) != (img_size, num_classes) and arch is None:
            raise JiTCheckpointError("img_size / num_classes disagree with the architecture")
        self.net = JiT(self.arch, attn_dropout, proj_dropout)
        self.diffusion = DiffusionConfig(P_mean, P_std, noise_scale, t_eps, label_drop_prob, sampling_method,
                                         num_sampling_steps, cfg_scale, float(cfg_interval[0]), float(cfg_interval[1]))
        self.absolute_lr: float | None = learning_rate
        check_random_stream(random_stream)
        self._stream: OriginalStream | None = None
        if compile:
            self.net.compile()

    @classmethod
    def from_args(cls, args: Mapping[str, Any], arch: Arch | None = None, **overrides: Any) -> "JiTLightningModule":
        """Build from the original training args (``model``, ``class_num``, ``lr``, ``cfg``, ...)."""
        from ..formats.lightning import hparams_from_args

        kwargs = hparams_from_args(args)
        if arch is not None:
            kwargs.update(arch=arch.to_dict(), img_size=arch.img_size, num_classes=arch.num_classes)
        if "batch_size" in args:
            kwargs["batch_size"] = args["batch_size"]
        kwargs.update(overrides)
        return cls(**kwargs)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse, in one line naming both, a checkpoint of another architecture (before Lightning loads its
        state dict, whose error lists every mismatched tensor)."""
        saved = (checkpoint.get("hyper_parameters") or {}).get("arch")
        if isinstance(saved, Mapping):
            theirs = Arch.from_dict(saved)
            if expected_shapes(theirs) != expected_shapes(self.arch):
                raise JiTCheckpointError(
                    f"the checkpoint holds a different network than this module: {theirs.describe()}, not "
                    f"{self.arch.describe()}; build the module from the checkpoint "
                    "(JiTLightningModule.from_args(ckpt.args, arch=ckpt.arch) with ckpt = jitckpt.load(path))")

    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy`` (FSDP2): shard every block, then the network."""
        mesh = getattr(self, "device_mesh", None)
        if mesh is None or "data_parallel" not in (mesh.mesh_dim_names or ()):
            return
        from torch.distributed.fsdp import fully_shard

        for block in self.net.blocks:
            fully_shard(block, mesh=mesh["data_parallel"])
        fully_shard(self.net, mesh=mesh["data_parallel"])

    # -- training -----------------------------------------------------------------------

    def effective_batch_size(self) -> int:
        trainer = self.trainer
        batch = self.hparams["batch_size"]
        if batch is None:
            datamodule = getattr(trainer, "datamodule", None)
            batch = getattr(datamodule, "batch_size", None)
        if batch is None:
            raise JiTCheckpointError("cannot derive the LR from blr: give learning_rate or batch_size")
        return batch * trainer.world_size * trainer.accumulate_grad_batches

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.absolute_lr is None:
            self.absolute_lr = self.hparams["blr"] * self.effective_batch_size() / 256
        groups = add_weight_decay(self, self.hparams["weight_decay"])
        return torch.optim.AdamW(groups, lr=self.absolute_lr, betas=ORIGINAL_BETAS)

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch[0], batch[1]
        if self._stream is not None:  # the original flips as it loads each image: here, in its order
            images = flip_images(images, self._stream.flips(batch_idx, images.shape[0]))
        x = images.to(torch.float32).div(255) * 2.0 - 1.0
        if self._stream is not None:
            generator = self._stream.forward_generator(x.device)
        else:
            generator = torch.Generator(device=x.device).manual_seed(self._noise_seed(batch_idx))
        loss = diffusion_loss(self.net, x, labels, self.diffusion, self.arch.num_classes, drop_labels=True,
                              generator=generator)
        if not torch.isfinite(loss.detach()).all():
            raise JiTCheckpointError(f"loss is {loss.item()}, stopping training (as the original does)")
        return loss

    def setup(self, stage: str) -> None:
        if self.hparams["random_stream"] == "original" and stage == "fit":
            attn, proj = self.hparams["attn_dropout"], self.hparams["proj_dropout"]
            self._stream = OriginalStream(self.hparams["seed"], self.global_rank, lambda: JiT(self.arch, attn, proj))

    def on_train_epoch_start(self) -> None:
        if self._stream is not None:
            trainer: Any = self.trainer
            workers = getattr(getattr(trainer, "datamodule", None), "num_workers", None)
            if workers is None:
                workers = getattr(trainer.train_dataloader, "num_workers", 0)
            self._stream.start_epoch(int(workers or 0))

    def _noise_seed(self, batch_idx: int) -> int:
        key = (self.hparams["seed"], self.current_epoch, batch_idx, self.global_rank)
        return hash(key) & (2**63 - 1)  # tuples of ints hash the same in every process

    # -- sampling -----------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [-1, 1] for ``labels`` with the module's sampling settings (noise from ``generator``)."""
        return generate(self.net, labels.to(self.device), self.diffusion, self.arch.num_classes, self.arch.img_size,
                        generator)
