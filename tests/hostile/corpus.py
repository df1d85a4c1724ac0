"""The hostile-input corpus: every family, seeded, in a default size and a full size.

Default: a few hundred inputs (every attack once, two flips per region, a few
cuts per base). Full (``pytest --hostile-full`` or ``JITCKPT_HOSTILE_FULL=1``):
the same attacks plus thousands of cuts and flips.

Example:
    >>> bases = tests.hostile.bases.make_bases(folder)
    >>> items = build_corpus(bases, full=False, seed=0)
"""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass

from .bases import Base
from .corpus_damage import bit_flips, truncations
from .corpus_pickle import pickle_attacks
from .corpus_safetensors import safetensors_attacks
from .corpus_zip import zip_attacks
from .items import CorpusItem, Patched

SEED = 20251126


@dataclass(frozen=True)
class Size:
    """How much random damage per base: extra random cuts, flips per region."""

    random_cuts: int
    flips_per_region: int


DEFAULT = Size(random_cuts=0, flips_per_region=2)
FULL = Size(random_cuts=160, flips_per_region=80)


def full_requested(option: bool = False) -> bool:
    """The full corpus: the pytest option, or ``JITCKPT_HOSTILE_FULL=1``."""
    return option or os.environ.get("JITCKPT_HOSTILE_FULL", "") not in ("", "0")


def pristine(bases: dict[str, Base]) -> list[CorpusItem]:
    """Each base as it is: must go through every command, and gives the references."""
    return [CorpusItem(name=f"pristine/{key}", category="pristine", suffix=base.suffix, source=Patched(base.path),
                       oracle=base.path, content_same=True) for key, base in bases.items()]


def build_corpus(bases: dict[str, Base], full: bool = False, seed: int = SEED) -> list[CorpusItem]:
    """Every corpus item, pristine bases first; names are unique."""
    size = FULL if full else DEFAULT
    rng = random.Random(seed)
    items = pristine(bases)
    for base in bases.values():
        items += truncations(base, size.random_cuts, rng)
        items += bit_flips(base, size.flips_per_region, rng)
    items += zip_attacks(bases)
    items += safetensors_attacks(bases)
    items += pickle_attacks(bases)
    duplicates = [name for name, n in Counter(item.name for item in items).items() if n > 1]
    assert not duplicates, f"duplicate corpus names: {sorted(duplicates)[:5]}"
    return items
