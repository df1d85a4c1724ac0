"""JiT architectures: the official variants, the parameter layout of any JiT, and
inferring the dimensions from a state dict's shapes alone.

Everything here works on names and shapes, so it runs without torch and on
lazy tensors. Keys are the canonical ``net.`` keys of the original ``Denoiser``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Mapping

from ..errors import SchemaError

Shape = tuple[int, ...]

T_FREQ_DIM = 256  # TimestepEmbedder's sinusoidal frequency size
IN_CHANNELS = 3


@dataclass(frozen=True)
class Arch:
    """The dimensions of a JiT network, named as the original ``JiT`` constructor names them."""

    depth: int
    hidden_size: int
    num_heads: int
    patch_size: int
    bottleneck_dim: int
    in_context_len: int
    in_context_start: int
    num_classes: int
    img_size: int
    mlp_hidden_dim: int | None = None  # SwiGLU width; None means the original int(hidden*4*2/3)
    variant: str | None = None

    @property
    def swiglu_hidden(self) -> int:
        return self.mlp_hidden_dim if self.mlp_hidden_dim is not None else int(self.hidden_size * 4 * 2 / 3)

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "Arch":
        """The architecture a record describes; a :class:`SchemaError` when a field is missing or of the wrong type."""
        if not isinstance(data, Mapping):
            raise SchemaError(f"architecture record is a {type(data).__name__}, not a mapping")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for name, value in known.items():
            if name == "variant":
                ok = value is None or isinstance(value, str) and len(value) < 100
            else:
                ok = (value is None and name == "mlp_hidden_dim") or (
                    type(value) is int and 0 <= value < 1 << 24 and (value > 0 or name.startswith("in_context")))
            if not ok:
                raise SchemaError(f"architecture record: {name} holds an invalid value ({type(value).__name__})")
        try:
            return cls(**known)
        except TypeError as exc:
            raise SchemaError(f"architecture record is incomplete: {exc}") from None

    def describe(self) -> str:
        dims = (
            f"depth={self.depth} hidden_size={self.hidden_size} num_heads={self.num_heads} "
            f"patch_size={self.patch_size} bottleneck_dim={self.bottleneck_dim} "
            f"in_context_len={self.in_context_len} in_context_start={self.in_context_start} "
            f"num_classes={self.num_classes} img_size={self.img_size}"
        )
        return f"{self.variant} ({dims})" if self.variant else dims


# name -> (depth, hidden, heads, bottleneck, patch); official in-context: 32 tokens from depth // 3
_OFFICIAL = {
    "JiT-B/16": (12, 768, 12, 128, 16),
    "JiT-B/32": (12, 768, 12, 128, 32),
    "JiT-L/16": (24, 1024, 16, 128, 16),
    "JiT-L/32": (24, 1024, 16, 128, 32),
    "JiT-H/16": (32, 1280, 16, 256, 16),
    "JiT-H/32": (32, 1280, 16, 256, 32),
}


def official(name: str, img_size: int = 256, num_classes: int = 1000) -> Arch:
    """The official variant ``name`` (e.g. ``'JiT-B/16'``) at ``img_size`` pixels."""
    if name not in _OFFICIAL:
        raise SchemaError(f"unknown JiT variant {name!r}; known: {', '.join(_OFFICIAL)}")
    depth, hidden, heads, bottleneck, patch = _OFFICIAL[name]
    if img_size % patch:
        raise SchemaError(f"image size {img_size} is not a multiple of {name}'s patch size {patch}")
    return Arch(depth, hidden, heads, patch, bottleneck, 32, depth // 3, num_classes, img_size, variant=name)


VARIANTS = tuple(_OFFICIAL)


def variant_name(arch: Arch) -> str | None:
    """The official variant with exactly these network dimensions, if any."""
    for name, (depth, hidden, heads, bottleneck, patch) in _OFFICIAL.items():
        candidate = (depth, hidden, heads, bottleneck, patch, 32, depth // 3, None)
        if candidate == (
            arch.depth, arch.hidden_size, arch.num_heads, arch.bottleneck_dim, arch.patch_size,
            arch.in_context_len, arch.in_context_start, arch.mlp_hidden_dim,
        ):
            return name
    return None


def expected_shapes(arch: Arch) -> dict[str, Shape]:
    """Every key of ``Denoiser.state_dict()`` with its shape, in the original order."""
    h, mlp, hd = arch.hidden_size, arch.swiglu_hidden, arch.hidden_size // arch.num_heads
    p, out = arch.patch_size, arch.patch_size**2 * IN_CHANNELS
    shapes: dict[str, Shape] = {"net.pos_embed": (1, arch.num_patches, h)}
    if arch.in_context_len > 0:
        shapes["net.in_context_posemb"] = (1, arch.in_context_len, h)
    shapes.update({
        "net.t_embedder.mlp.0.weight": (h, T_FREQ_DIM),
        "net.t_embedder.mlp.0.bias": (h,),
        "net.t_embedder.mlp.2.weight": (h, h),
        "net.t_embedder.mlp.2.bias": (h,),
        "net.y_embedder.embedding_table.weight": (arch.num_classes + 1, h),
        "net.x_embedder.proj1.weight": (arch.bottleneck_dim, IN_CHANNELS, p, p),
        "net.x_embedder.proj2.weight": (h, arch.bottleneck_dim, 1, 1),
        "net.x_embedder.proj2.bias": (h,),
    })
    for i in range(arch.depth):
        b = f"net.blocks.{i}."
        shapes.update({
            b + "norm1.weight": (h,),
            b + "attn.q_norm.weight": (hd,),
            b + "attn.k_norm.weight": (hd,),
            b + "attn.qkv.weight": (3 * h, h),
            b + "attn.qkv.bias": (3 * h,),
            b + "attn.proj.weight": (h, h),
            b + "attn.proj.bias": (h,),
            b + "norm2.weight": (h,),
            b + "mlp.w12.weight": (2 * mlp, h),
            b + "mlp.w12.bias": (2 * mlp,),
            b + "mlp.w3.weight": (h, mlp),
            b + "mlp.w3.bias": (h,),
            b + "adaLN_modulation.1.weight": (6 * h, h),
            b + "adaLN_modulation.1.bias": (6 * h,),
        })
    shapes.update({
        "net.final_layer.norm_final.weight": (h,),
        "net.final_layer.linear.weight": (out, h),
        "net.final_layer.linear.bias": (out,),
        "net.final_layer.adaLN_modulation.1.weight": (2 * h, h),
        "net.final_layer.adaLN_modulation.1.bias": (2 * h,),
    })
    return shapes


FROZEN_KEYS = ("net.pos_embed",)  # fixed sin-cos embedding: a parameter without gradient


def trainable_names(arch: Arch) -> list[str]:
    """Names of the trainable parameters in ``named_parameters()`` order."""
    return [k for k in expected_shapes(arch) if k not in FROZEN_KEYS]


def count_params(shapes: Mapping[str, Shape]) -> int:
    return sum(math.prod(s) for s in shapes.values())


def infer_arch(
    shapes: Mapping[str, Shape], model_name: str | None = None, in_context_start: int | None = None
) -> tuple[Arch, list[str]]:
    """Read a JiT's dimensions off its state-dict ``shapes`` (canonical ``net.`` keys).

    ``in_context_start`` cannot be seen in the shapes; it defaults to ``depth // 3``
    as in every official variant. Returns the architecture and a list of warnings
    (for instance when ``model_name``, the training args' ``model``, disagrees).
    Raises :class:`SchemaError` naming the key when the shapes are not a JiT's.
    """

    def need(key: str) -> Shape:
        if key not in shapes:
            raise SchemaError(f"not a JiT state dict: key {key!r} is missing")
        return tuple(shapes[key])

    pos = need("net.pos_embed")
    hidden = pos[-1]
    proj1 = need("net.x_embedder.proj1.weight")
    bottleneck, patch = proj1[0], proj1[-1]
    grid = math.isqrt(pos[1])
    if grid * grid != pos[1] or len(pos) != 3:
        raise SchemaError(f"net.pos_embed has shape {pos}: expected (1, grid*grid, hidden)")
    head_dim = need("net.blocks.0.attn.q_norm.weight")[0]
    if head_dim == 0 or hidden % head_dim:
        raise SchemaError(f"net.blocks.0.attn.q_norm.weight length {head_dim} does not divide hidden {hidden}")
    depth = 0
    while f"net.blocks.{depth}.norm1.weight" in shapes:
        depth += 1
    mlp = need("net.blocks.0.mlp.w3.weight")[1]
    in_ctx = tuple(shapes["net.in_context_posemb"])[1] if "net.in_context_posemb" in shapes else 0
    classes = need("net.y_embedder.embedding_table.weight")[0] - 1
    arch = Arch(
        depth=depth, hidden_size=hidden, num_heads=hidden // head_dim, patch_size=patch,
        bottleneck_dim=bottleneck, in_context_len=in_ctx,
        in_context_start=depth // 3 if in_context_start is None else in_context_start,
        num_classes=classes, img_size=grid * patch,
        mlp_hidden_dim=None if mlp == int(hidden * 4 * 2 / 3) else mlp,
    )
    arch = replace(arch, variant=variant_name(arch))
    warnings = []
    if model_name and arch.variant and model_name != arch.variant:
        warnings.append(f"args.model is {model_name!r} but the tensor shapes are those of {arch.variant}")
    elif model_name in _OFFICIAL and arch.variant is None:
        warnings.append(f"args.model is {model_name!r} but the tensor shapes match no official variant")
    return arch, warnings


def check_shapes(section: str, shapes: Mapping[str, Shape], arch: Arch) -> None:
    """Raise :class:`SchemaError` naming the first key whose presence or shape differs from ``arch``."""
    expected = expected_shapes(arch)
    for key, shape in shapes.items():
        if key not in expected:
            raise SchemaError(f"{section}: unexpected key {key!r} for {arch.describe()}")
        if tuple(shape) != expected[key]:
            raise SchemaError(
                f"{section}: {key!r} has shape {tuple(shape)}, expected {expected[key]} for {arch.variant or 'this architecture'}"
            )
    missing = [k for k in expected if k not in shapes]
    if missing:
        raise SchemaError(f"{section}: missing key {missing[0]!r} ({len(missing)} missing in all)")
