"""core.seeds."""

from __future__ import annotations

from avatar_cascade.core.errors import InputError

MAX_SEED = 2**63 - 1


def check_seed(seed: int, input_name: str = "seed") -> int:
    if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(input_name, seed, f"must be an integer in [0, {MAX_SEED}]", "pick a non-negative 63-bit seed")
    return seed


def derive_seed(run_seed: int, index: int, salt: int = 0) -> int:
    """Seed of clip ``index`` derived from the run seed (stable, 63-bit)."""
    import hashlib

    h = hashlib.sha256(f"{run_seed}:{index}:{salt}".encode()).digest()
    return int.from_bytes(h[:8], "little") & MAX_SEED


def seed_setting(tooltip: str, *, control_after_generate: bool = True):
    """A run seed in ``[0, MAX_SEED]`` declared as a setting (see :mod:`avatar_cascade.core.settings`)."""
    from avatar_cascade.core.settings import setting

    return setting(
        0,
        tooltip=tooltip,
        min=0,
        max=MAX_SEED,
        control_after_generate=control_after_generate,
        validate=lambda name, value: check_seed(value, name),
        fix="pick a non-negative 63-bit seed",
    )
