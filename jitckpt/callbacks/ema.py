"""Two exponential moving averages of the parameters, as the original keeps them."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, cast

import lightning as L
import torch

from ..compat import foreach_copy_, foreach_mul_add_, saves_distributed_checkpoint
from ..errors import JiTCheckpointError
from ..lightning.checkpoint_io import explain_unread_resume
from . import ema_sharding


PIECE = 320 * 1024  # elements: a piece of both EMAs and of the parameter (3.75 MiB of float32) stays in the
# two cores' caches from mul_ to add_ (benchmarks/ema.py: 1.25-1.29x fused lerp's time; whole tensors 1.42-1.45x)


def update_in_pieces_(emas: list[tuple[list[torch.Tensor], float]], params: list[torch.Tensor]) -> None:
    """``ema.mul_(decay).add_(param, alpha=1 - decay)`` for every (EMA list, decay) and parameter, with those
    ops' rounding (elementwise, so cutting a tensor changes no bit), a ``PIECE`` of each tensor at a time: the
    parameter's piece is read from memory once for both EMAs, and each EMA's piece once for both ops."""
    for index, param in enumerate(params):
        targets = [(tensors[index], decay) for tensors, decay in emas]
        if param.numel() <= PIECE or not all(t.is_contiguous() for t, _ in targets) or not param.is_contiguous():
            for tensor, decay in targets:
                tensor.mul_(decay).add_(param, alpha=1 - decay)
            continue
        flat_param, flats = param.view(-1), [(t.view(-1), decay) for t, decay in targets]
        for start in range(0, flat_param.numel(), PIECE):
            piece = flat_param[start:start + PIECE]
            for flat, decay in flats:
                flat[start:start + PIECE].mul_(decay).add_(piece, alpha=1 - decay)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (FSDP2), or the tensor itself."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if to_local is not None else tensor


class EMACallback(L.Callback):
    """``ema_k <- decay_k * ema_k + (1 - decay_k) * param`` after every optimizer step, for k = 1, 2.

    Both EMAs cover every parameter in ``named_parameters()`` order (the frozen
    ``pos_embed`` included, as in the original). The update is the original's
    ``mul_`` then ``add_``, bitwise (fused off the CPU; no host sync), and runs
    once per optimizer step, not per micro-batch. Its state (both EMAs by
    parameter name) goes through ``state_dict``/``load_state_dict``: a resumed
    run continues the saved EMAs and never re-initialises them. Under FSDP2 the
    EMA lives on each rank's local shards, and checkpoints keep every rank's
    shards (see :mod:`.ema_sharding`): a distributed checkpoint holds them beside
    the parameters, resharded on load to any number of ranks; a full checkpoint
    the gathered EMAs.
    """

    state_key = "EMACallback"

    def __init__(self, ema_decay1: float = 0.9999, ema_decay2: float = 0.9996) -> None:
        for decay in (ema_decay1, ema_decay2):
            if not 0.0 <= decay <= 1.0:
                raise JiTCheckpointError(f"EMA decay {decay} is outside [0, 1]")
        self.ema_decay1, self.ema_decay2 = ema_decay1, ema_decay2
        self.names: list[str] = []
        self.ema1: list[torch.Tensor] = []
        self.ema2: list[torch.Tensor] = []
        self._loaded: dict | None = None
        self._sharded_source: str | None = None  # a DCP directory whose state_dict holds the EMAs
        self._checkpoint_path: str | None = None
        self._last_step: int | None = None
        self.num_updates = 0

    # -- setup and resume ---------------------------------------------------------------

    def original_args(self) -> dict[str, Any]:
        """The original's args this callback was configured with (read by ``run_args``)."""
        return {"ema_decay1": self.ema_decay1, "ema_decay2": self.ema_decay2}

    def _params(self, pl_module: L.LightningModule) -> list[torch.Tensor]:
        return [_local(p.detach()) for p in pl_module.parameters()]

    def _ensure(self, pl_module: L.LightningModule) -> None:
        if self.ema1 and self._loaded is None and self._sharded_source is None:
            return
        named = list(pl_module.named_parameters())
        self.names = [n for n, _ in named]
        params = self._params(pl_module)
        if self._sharded_source is not None:
            source, self._sharded_source = self._sharded_source, None
            loaded_locals = ema_sharding.load_from_directory(source, named)
            self.ema1, self.ema2 = loaded_locals["ema1"], loaded_locals["ema2"]
        elif self._loaded is not None:
            loaded, self._loaded = self._loaded, None
            for key in ("ema1", "ema2"):
                missing = [n for n in self.names if n not in loaded[key]]
                if missing:
                    raise JiTCheckpointError(f"EMACallback state has no {key} for {missing[0]!r}")
            self.ema1 = [self._place(loaded["ema1"][n], p, full) for (n, full), p in zip(named, params)]
            self.ema2 = [self._place(loaded["ema2"][n], p, full) for (n, full), p in zip(named, params)]
        else:
            self.ema1 = [p.clone() for p in params]
            self.ema2 = [p.clone() for p in params]

    @staticmethod
    def _place(saved: torch.Tensor, param: torch.Tensor, full_param: Any) -> torch.Tensor:
        """A saved EMA tensor on the parameter's device; this rank's shard of it when params are sharded."""
        if ema_sharding.is_dtensor(full_param):
            return ema_sharding.local_shard_of(saved, full_param)
        saved = _local(saved).to(device=param.device, dtype=param.dtype)
        if saved.shape == param.shape:
            return saved.clone()
        raise JiTCheckpointError(f"saved EMA of shape {tuple(saved.shape)} does not fit a parameter of {tuple(param.shape)}")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ensure(pl_module)
        self._last_step = trainer.global_step

    # -- update -------------------------------------------------------------------------

    @torch.no_grad()
    def update_(self, pl_module: L.LightningModule) -> None:
        """Advance both EMAs by one step towards the current parameters (in place)."""
        self._ensure(pl_module)
        params = self._params(pl_module)
        emas = [(self.ema1, self.ema_decay1), (self.ema2, self.ema_decay2)]
        if params and params[0].device.type == "cpu":
            update_in_pieces_(emas, params)
        else:  # fused kernels, no host sync
            for ema, decay in emas:
                foreach_mul_add_(ema, decay, params, alpha=1.0 - decay)  # the original's arithmetic, rounding alike
        self.num_updates += 1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step != self._last_step:  # an optimizer step happened in this batch
            self._last_step = trainer.global_step
            self.update_(pl_module)

    # -- access -------------------------------------------------------------------------

    def _select(self, ema_version: int) -> list[torch.Tensor]:
        if ema_version not in (1, 2):
            raise JiTCheckpointError(f"ema_version must be 1 or 2, not {ema_version!r}")
        return self.ema1 if ema_version == 1 else self.ema2

    def get_ema_state_dict(self, pl_module: L.LightningModule, ema_version: int = 1) -> dict[str, torch.Tensor]:
        """The model's state dict with EMA ``ema_version`` in place of every parameter (no copies)."""
        self._ensure(pl_module)
        state = dict(pl_module.state_dict())
        state.update(zip(self.names, self._select(ema_version)))
        return state

    @torch.no_grad()
    def load_ema_to_model(self, pl_module: L.LightningModule, ema_version: int = 1) -> None:
        """Copy EMA ``ema_version`` into the model's parameters (the raw weights are overwritten)."""
        self._ensure(pl_module)
        foreach_copy_(self._params(pl_module), self._select(ema_version))

    @contextlib.contextmanager
    def swap_ema(self, pl_module: L.LightningModule, ema_version: int = 1) -> Iterator[None]:
        """Run the block with EMA weights in the model; the raw weights come back afterwards.

        Parameters and EMA exchange storage (``param.data``), so nothing is copied. Under FSDP2 the
        parameters are DTensors whose shards FSDP gathers from its own storage: there the EMA's local shards
        are copied into the parameters' and the raw shards copied back afterwards (one shard's copy held).
        """
        self._ensure(pl_module)
        ema = self._select(ema_version)
        params = list(pl_module.parameters())
        if ema_sharding.reshard(pl_module):  # FSDP2: each parameter is its shard again (a forward may gather)
            shards = self._params(pl_module)
            raw = [shard.clone() for shard in shards]
            with torch.no_grad():
                foreach_copy_(shards, ema)
            try:
                yield
            finally:
                ema_sharding.reshard(pl_module)  # drops what the block gathered, EMA values included
                with torch.no_grad():
                    foreach_copy_(shards, raw)
            return
        self._exchange(params, ema)
        try:
            yield
        finally:
            self._exchange(params, ema)

    @staticmethod
    def _exchange(params: list[torch.nn.Parameter], ema: list[torch.Tensor]) -> None:
        for i, param in enumerate(params):
            raw = param.data
            param.data = ema[i]
            ema[i] = raw

    def consolidated_state_dict(self, pl_module: L.LightningModule, ema_version: int = 1) -> dict[str, torch.Tensor]:
        """EMA ``ema_version`` as full tensors by parameter name, gathered from FSDP2 shards.

        A collective under FSDP2: every rank must call it. Without sharding it
        is the EMA itself.
        """
        self._ensure(pl_module)
        full = {}
        for (name, param), ema in zip(pl_module.named_parameters(), self._select(ema_version)):
            if hasattr(param, "device_mesh"):  # a DTensor: rebuild the sharded EMA alongside it
                from torch.distributed.tensor import DTensor

                shard = cast(DTensor, param)  # torch types named_parameters() as Parameters; FSDP2's are DTensors
                ema = DTensor.from_local(ema, shard.device_mesh, shard.placements, shape=shard.shape,
                                         stride=shard.stride()).full_tensor()
            full[name] = ema
        return full

    # -- checkpointing ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"ema_decay1": self.ema_decay1, "ema_decay2": self.ema_decay2,
                                 "num_updates": self.num_updates}
        if self.ema1:
            state["ema1"] = dict(zip(self.names, self.ema1))
            state["ema2"] = dict(zip(self.names, self.ema2))
        return state

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        explain_unread_resume(trainer, exception)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        """Under sharding, every rank's EMA shards go where the strategy keeps every rank's data."""
        named = list(pl_module.named_parameters())
        if not self.ema1 or not any(ema_sharding.is_dtensor(p) for _, p in named):
            return
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is None:
            return
        if saves_distributed_checkpoint(trainer.strategy):  # module state as DTensors; meta.pt from rank 0
            state.pop("ema1", None)
            state.pop("ema2", None)
            state["sharded"] = True
            ema_sharding.put_in_state_dict(checkpoint["state_dict"], named, {"ema1": self.ema1, "ema2": self.ema2})
        else:  # one full file: the gathered EMAs (a collective, as the strategy's own gathering is)
            state["ema1"] = self.consolidated_state_dict(pl_module, 1)
            state["ema2"] = self.consolidated_state_dict(pl_module, 2)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._checkpoint_path = str(trainer.ckpt_path) if trainer.ckpt_path else None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("sharded"):
            if self._checkpoint_path is None:
                raise JiTCheckpointError("the checkpoint's EMAs are stored sharded, with the parameters, but the "
                                         "checkpoint's directory is not known: resume with trainer.fit(ckpt_path=DIR)")
            self.num_updates = int(state_dict.get("num_updates", 0))
            self._sharded_source, self._loaded = self._checkpoint_path, None
            self.ema1, self.ema2 = [], []
            return
        if "ema1" not in state_dict or "ema2" not in state_dict:
            raise JiTCheckpointError("the checkpoint's EMACallback state holds no EMA weights (ema1 / ema2)")
        self.num_updates = int(state_dict.get("num_updates", 0))
        self._loaded = {"ema1": state_dict["ema1"], "ema2": state_dict["ema2"]}
        self.ema1, self.ema2 = [], []


def find_ema_callback(trainer: L.Trainer) -> EMACallback | None:
    """The trainer's EMACallback, if it has one."""
    # Lightning's callback connector sets trainer.callbacks; Trainer's own annotations never declare it
    return next((cb for cb in trainer.callbacks if isinstance(cb, EMACallback)), None)  # type: ignore[attr-defined]
