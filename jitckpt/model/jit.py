"""The JiT network: exactly the parameter names, shapes and arithmetic of the original.

Built from an :class:`~jitckpt.layouts.arch.Arch`, so any official variant or
custom dimensions work. Runs on any device (no hard-coded ``.cuda()``);
``torch.compile`` is optional. Attention scores are computed in float32 as the
original does, so results match it to float rounding.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..layouts.arch import IN_CHANNELS, T_FREQ_DIM, Arch


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x^2) + eps)``, computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * x).to(dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Pairs (a, b) of the last dimension become (-b, a)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


class Rope2d(nn.Module):
    """2-D rotary position embedding over a ``grid x grid`` patch grid (axial, h then w).

    ``num_prefix`` leading tokens (the in-context tokens) are left unrotated.
    """

    cos: torch.Tensor  # buffers (register_buffer below), typed for the arithmetic in forward
    sin: torch.Tensor

    def __init__(self, half_head_dim: int, grid: int, num_prefix: int = 0, theta: float = 10000.0) -> None:
        super().__init__()
        freqs = 1.0 / (theta ** (torch.arange(0, half_head_dim, 2)[: half_head_dim // 2].float() / half_head_dim))
        positions = torch.arange(grid) / grid * grid  # the original's float positions, rounding included
        angles = torch.einsum("i,f->if", positions, freqs).repeat_interleave(2, dim=-1)  # (grid, half_head_dim)
        table = torch.cat(
            (angles[:, None, :].expand(grid, grid, -1), angles[None, :, :].expand(grid, grid, -1)), dim=-1
        ).reshape(grid * grid, -1)
        cos, sin = table.cos(), table.sin()
        if num_prefix:
            cos = torch.cat([torch.ones(num_prefix, cos.shape[1]), cos])
            sin = torch.cat([torch.zeros(num_prefix, sin.shape[1]), sin])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.cos + _rotate_half(x) * self.sin


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, rope: Rope2d) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = rope(self.q_norm(q)), rope(self.k_norm(k))
        with torch.autocast(device_type=x.device.type, enabled=False):
            scores = q.float() @ k.float().transpose(-2, -1) * (1 / math.sqrt(q.size(-1)))
        weights = torch.dropout(torch.softmax(scores, dim=-1), self.attn_drop if self.training else 0.0, train=True)
        x = (weights @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden, bias=True)
        self.w3 = nn.Linear(hidden, dim, bias=True)
        self.ffn_dropout = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(self.ffn_dropout(F.silu(x1) * x2))


class JiTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_hidden: int, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        self.norm1 = RMSNorm(hidden)
        self.attn = Attention(hidden, heads, attn_drop, proj_drop)
        self.norm2 = RMSNorm(hidden)
        self.mlp = SwiGLU(hidden, mlp_hidden, proj_drop)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope: Rope2d) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope)
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, patch: int) -> None:
        super().__init__()
        self.norm_final = RMSNorm(hidden)
        self.linear = nn.Linear(hidden, patch * patch * IN_CHANNELS, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(T_FREQ_DIM, hidden, bias=True), nn.SiLU(), nn.Linear(hidden, hidden, bias=True))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = T_FREQ_DIM // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(0, half, dtype=torch.float32) / half).to(t.device)
        args = t[:, None].float() * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class LabelEmbedder(nn.Module):
    """Class embeddings; index ``num_classes`` is the null (unconditional) class."""

    def __init__(self, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels)


class BottleneckPatchEmbed(nn.Module):
    def __init__(self, patch: int, bottleneck: int, hidden: int) -> None:
        super().__init__()
        self.proj1 = nn.Conv2d(IN_CHANNELS, bottleneck, kernel_size=patch, stride=patch, bias=False)
        self.proj2 = nn.Conv2d(bottleneck, hidden, kernel_size=1, stride=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj2(self.proj1(x)).flatten(2).transpose(1, 2)


def sincos_pos_embed(dim: int, grid: int) -> np.ndarray:
    """The fixed 2-D sin-cos embedding of the original (``(grid*grid, dim)``, float64)."""

    def one_axis(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    coords = np.arange(grid, dtype=np.float32)
    grid_w, grid_h = np.meshgrid(coords, coords)  # w first, as the original
    return np.concatenate([one_axis(dim // 2, grid_w), one_axis(dim // 2, grid_h)], axis=1)


class JiT(nn.Module):
    """Just image Transformer: ``forward(x, t, y)`` predicts the clean image from ``x`` at time ``t``."""

    @classmethod
    def from_pretrained(cls, folder: str, device: str = "cpu", revision: str | None = None) -> "JiT":
        """The network of a ``jitckpt export`` folder (or of any checkpoint: its EMA 1), as
        ``PyTorchModelHubMixin.from_pretrained`` loads one: a local folder or file, a URL, or a Hub repo id
        (fetched with huggingface_hub, which only that needs; see :mod:`jitckpt.model.hub`).

        Read through jitckpt's one checked path (:func:`jitckpt.load`): the checksums, the bounds of every JSON
        file, and the architecture against the weights' shapes, before anything is allocated.
        Raises :class:`~jitckpt.errors.JiTCheckpointError` (one line) on a bad folder.
        """
        from ..api import load
        from ..tensors.anytensor import to_torch
        from .hub import resolve_pretrained

        ckpt = load(resolve_pretrained(folder, revision), lazy=True)
        assert ckpt.arch is not None  # every checkpoint read has one
        state = ckpt.weights(ckpt.extra.get("weights") or "ema1")
        net = cls(ckpt.arch, ckpt.args.get("attn_dropout", 0.0), ckpt.args.get("proj_dropout", 0.0))
        net.load_state_dict({k.removeprefix("net."): to_torch(v) for k, v in state.items()})
        return net.to(device).eval()

    def __init__(self, arch: Arch, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.arch = arch
        h, grid = arch.hidden_size, arch.img_size // arch.patch_size
        self.t_embedder = TimestepEmbedder(h)
        self.y_embedder = LabelEmbedder(arch.num_classes, h)
        self.x_embedder = BottleneckPatchEmbed(arch.patch_size, arch.bottleneck_dim, h)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, h), requires_grad=False)
        if arch.in_context_len > 0:
            self.in_context_posemb = nn.Parameter(torch.zeros(1, arch.in_context_len, h))
            # drawn here, before the blocks' own initialisation draws, as the original does: a model built
            # from the same seed gets the original's weights, and the generator ends where the original's does
            nn.init.normal_(self.in_context_posemb, std=0.02)
        half_head = h // arch.num_heads // 2
        self.feat_rope = Rope2d(half_head, grid)
        self.feat_rope_incontext = Rope2d(half_head, grid, num_prefix=arch.in_context_len)
        quarter = arch.depth // 4
        self.blocks = nn.ModuleList(
            JiTBlock(h, arch.num_heads, arch.swiglu_hidden,
                     attn_drop if quarter * 3 > i >= quarter else 0.0,
                     proj_drop if quarter * 3 > i >= quarter else 0.0)
            for i in range(arch.depth)
        )
        self.final_layer = FinalLayer(h, arch.patch_size)
        if self.pos_embed.device.type != "meta":
            self.initialize_weights()

    def initialize_weights(self) -> None:
        """The original initialisation (xavier linears, zeroed adaLN and output layers)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        grid = self.arch.img_size // self.arch.patch_size
        self.pos_embed.data.copy_(torch.from_numpy(sincos_pos_embed(self.arch.hidden_size, grid)).float().unsqueeze(0))
        for conv in (self.x_embedder.proj1, self.x_embedder.proj2):
            nn.init.xavier_uniform_(conv.weight.data.view(conv.weight.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj2.get_parameter("bias"))
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].get_parameter("weight"), std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].get_parameter("weight"), std=0.02)
        blocks = cast("list[JiTBlock]", list(self.blocks))  # __init__ fills self.blocks with JiTBlocks only
        for layer in [b.adaLN_modulation[-1] for b in blocks] + [self.final_layer.adaLN_modulation[-1],
                                                                 self.final_layer.linear]:
            nn.init.zeros_(layer.get_parameter("weight"))
            nn.init.zeros_(layer.get_parameter("bias"))

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        p = self.arch.patch_size
        side = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], side, side, p, p, IN_CHANNELS)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], IN_CHANNELS, side * p, side * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y_emb = self.y_embedder(y)
        c = self.t_embedder(t) + y_emb
        x = self.x_embedder(x) + self.pos_embed
        start, length = self.arch.in_context_start, self.arch.in_context_len
        for i, block in enumerate(self.blocks):
            if length > 0 and i == start:
                tokens = y_emb.unsqueeze(1).repeat(1, length, 1) + self.in_context_posemb
                x = torch.cat([tokens, x], dim=1)
            x = block(x, c, self.feat_rope if i < start else self.feat_rope_incontext)
        return self.unpatchify(self.final_layer(x[:, length:], c))
