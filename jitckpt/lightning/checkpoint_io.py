"""``JiTCheckpointIO``: Lightning reads and writes every format jitckpt knows, through the schema.

``Trainer(plugins=[JiTCheckpointIO()]).fit(module, data, ckpt_path="checkpoint-last.pth")``
resumes from the original ``.pth`` (or ``.safetensors``, a DCP directory, a
``.ckpt``) with no intermediate file: each tensor is read once, from the source,
into the dictionary Lightning restores from (module, AdamW state in
``JiTLightningModule``'s groups, EMACallback's EMAs, epoch, global step and the
loops that make Lightning start at the next epoch), the same dictionary a
conversion to ``.ckpt`` would hold. ``save_checkpoint`` writes the format the
path's suffix names (``.ckpt`` Lightning's own dictionary; ``.pth`` the original
layout; ``.safetensors`` the pickle-free full state; ``.dcp`` a directory),
atomically and durably like every jitckpt write. It composes with Lightning's
``AsyncCheckpointIO``, which snapshots the tensors on the training thread and
writes in the background: ``AsyncCheckpointIO(JiTCheckpointIO())``;
:class:`JiTAsyncCheckpointIO` does the same with a cheaper snapshot.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, cast

from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.plugins.io import AsyncCheckpointIO

from .. import formats
from ..formats import lightning as lightning_format
from ..formats.table import facts
from ..schema import JiTCheckpoint
from ..storage import sources
from ..tensors.lazy import LazyTensor, iter_refs


class JiTCheckpointIO(CheckpointIO):
    """Lightning's CheckpointIO for original ``.pth``, ``.ckpt``, ``.safetensors`` and DCP directories.

    ``prepared`` maps a path to a :class:`JiTCheckpoint` to restore instead of the
    file's own content (``jitckpt train`` passes the source as it decided to resume
    it: EMAs filled from the raw weights, a fresh optimizer, ...); the tensors are
    still read from the file. ``ckpt_path`` may be a URL (``https://``, ``hf://``, any fsspec address, read by
    range requests: see :mod:`jitckpt.storage.sources`), with fsspec's ``storage_options`` for its filesystem.
    """

    def __init__(self, prepared: dict[str, JiTCheckpoint] | None = None,
                 storage_options: dict[str, Any] | None = None) -> None:
        self.prepared = {_key(k): v for k, v in (prepared or {}).items()}
        self.storage_options = dict(storage_options or {})

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        """The dictionary Lightning restores from, for a file or directory of any format, local or remote."""
        path = str(path)
        with sources.storage_options(self.storage_options):
            ckpt = self.prepared.get(_key(path))
            if ckpt is None:  # every format, Lightning's own included, through the schema's checks
                _, ckpt = formats.read(path)
            return _materialize(lightning_format.to_tree(ckpt), map_location)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` (Lightning's dictionary) in the format the suffix of ``path`` names (``.ckpt``
        when it names none), atomically."""
        from ..api import save
        from ..storage.atomic import atomic_output
        from ..torchfile.write import archive_name, write_tree

        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        name = formats.format_for_suffix(target) or lightning_format.NAME
        if name == lightning_format.NAME:
            with atomic_output(target, force=True) as handle:
                write_tree(checkpoint, handle, archive=archive_name(target))
            return
        save(lightning_format.from_tree(checkpoint, str(target)), target, name, force=True)

    def save_checkpoints(self, checkpoint: dict[str, Any], paths: list[Any]) -> None:
        """Write one checkpoint to several paths, each in the format its suffix names."""
        for path in paths:
            self.save_checkpoint(checkpoint, path)

    def remove_checkpoint(self, path: Any) -> None:
        target = Path(path)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


READERS = 2  # reads and CRCs release the GIL: two threads keep two cores busy


def _key(path: str) -> str:
    return path if sources.is_url(path) else os.path.abspath(path)


def _materialize(tree: Any, map_location: Any) -> Any:
    """Every TensorRef of ``tree`` read into a torch tensor (once each, by READERS threads), moved where
    ``map_location`` says."""
    from concurrent.futures import ThreadPoolExecutor

    refs = list(iter_refs(tree))
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        read = dict(zip(map(id, refs), pool.map(lambda ref: _place(ref.to_torch(), map_location), refs)))

    def visit(node: Any) -> Any:
        if isinstance(node, LazyTensor):
            return read[id(node)]
        if isinstance(node, dict):
            copied = {k: visit(v) for k, v in node.items()}
            return copied if type(node) is dict else type(node)(copied)
        if isinstance(node, list):
            return [visit(v) for v in node]
        if isinstance(node, tuple):
            return tuple(visit(v) for v in node)
        return node

    return visit(tree)


def _place(tensor: Any, map_location: Any) -> Any:
    if map_location is None or callable(map_location) or isinstance(map_location, dict):
        return tensor  # read onto the CPU; Lightning moves the module's and optimizer's state itself
    return tensor.to(map_location)


class JiTAsyncCheckpointIO(AsyncCheckpointIO):
    """Lightning's ``AsyncCheckpointIO`` around :class:`JiTCheckpointIO`, with a snapshot that costs less.

    The training thread copies every tensor of the checkpoint into buffers kept
    from one save to the next (allocated at the first save: page-locked when the
    tensor is on a GPU), then goes on while a background thread writes from them.
    Lightning's own wrapper clones into fresh memory at every save, and on this
    CPU faulting in gigabytes of new pages is most of the time the training thread
    waits (see the figures in docs/performance.md). A save waits for the previous write to finish
    before reusing the buffers; a failed write is raised at the next save or at
    the end of training.
    """

    def __init__(self, checkpoint_io: CheckpointIO | None = None) -> None:
        super().__init__(checkpoint_io or JiTCheckpointIO())
        self._buffers: dict[tuple, Any] = {}
        self._pending: Any = None
        self._writer: Any = None  # our own one-thread executor (AsyncCheckpointIO's is private)
        self._failure: BaseException | None = None

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        self._submit(checkpoint, [path], storage_options)

    def save_checkpoints(self, checkpoint: dict[str, Any], paths: list[Any]) -> None:
        """One snapshot, written to several paths in turn (a second save of the same step would otherwise wait
        for the first write to free the buffers)."""
        self._submit(checkpoint, paths, None)

    def _submit(self, checkpoint: dict[str, Any], paths: list[Any], storage_options: Any | None) -> None:
        if self._writer is None:
            from concurrent.futures import ThreadPoolExecutor

            self._writer = ThreadPoolExecutor(max_workers=1)
        if self._pending is not None:
            self._pending.result()  # the previous write is done with the buffers
        self._raise_failure()
        snapshot = self._snapshot(checkpoint, ())
        io = cast(CheckpointIO, self.checkpoint_io)  # never None: __init__ always wraps one (ours by default)

        def write() -> None:
            try:
                for path in paths:
                    io.save_checkpoint(snapshot, path, storage_options)
            except BaseException as exc:  # raised on the training thread at the next save or teardown
                self._failure = exc

        self._pending = self._writer.submit(write)

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _snapshot(self, node: Any, where: tuple) -> Any:
        import torch

        if isinstance(node, torch.Tensor):
            buffer = self._buffers.get(where)
            if buffer is None or buffer.shape != node.shape or buffer.dtype != node.dtype:
                pin = node.is_cuda and torch.cuda.is_available()
                buffer = torch.empty(node.shape, dtype=node.dtype, pin_memory=pin)
                self._buffers[where] = buffer
            buffer.copy_(node.detach(), non_blocking=node.is_cuda)
            return buffer
        if isinstance(node, dict):
            copied = {k: self._snapshot(v, where + (k,)) for k, v in node.items()}
            return copied if type(node) is dict else type(node)(copied)
        if isinstance(node, (list, tuple)):
            items = [self._snapshot(v, where + (i,)) for i, v in enumerate(node)]
            return items if isinstance(node, list) else tuple(items)
        return node

    def teardown(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer, self._pending = None, None
        self._buffers.clear()
        super().teardown()
        self._raise_failure()


def explain_unread_resume(trainer: Any, exception: BaseException) -> None:
    """Lightning's ``on_exception``: when the trainer resumed through a reader other than jitckpt's and
    ``ckpt_path`` is a file only :class:`JiTCheckpointIO` reads (an original ``.pth``, a safetensors file,
    a DCP directory), add a note to the exception saying so. torch's own message about an original
    checkpoint suggests ``weights_only=False``, which would run the file's code and still not restore it."""
    reader = getattr(trainer.strategy, "checkpoint_io", None)
    reader = getattr(reader, "checkpoint_io", reader)  # an AsyncCheckpointIO wraps the reader
    path = getattr(trainer, "ckpt_path", None)
    if path is None or isinstance(reader, JiTCheckpointIO) or not os.path.exists(path):
        return
    try:
        kind = formats.detect_format(path)
    except Exception:  # not a checkpoint jitckpt knows: the exception says what it says
        return
    if kind == "ckpt":  # Lightning's own: its reader's error stands
        return
    note = (f"jitckpt: Lightning's own reader cannot restore {str(path)!r} ({facts(kind).label}); "
            "pass Trainer(plugins=[jitckpt.lightning.JiTCheckpointIO()]) (no weights_only=False needed)")
    if note not in getattr(exception, "__notes__", []):
        exception.__notes__ = [*getattr(exception, "__notes__", []), note]  # add_note, also on Python 3.10
