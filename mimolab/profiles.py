"""The profile a notebook or job runs at: one environment variable (or papermill parameter)."""

from __future__ import annotations

import os

PROFILES = ("smoke", "cpu", "gpu", "mimo-vl-7b")


def get_profile(default: str = "cpu") -> str:
    """``MIMOLAB_PROFILE`` if set, else ``default``; a clear error for an unknown name."""
    profile = os.environ.get("MIMOLAB_PROFILE", default)
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} (MIMOLAB_PROFILE); choose one of {PROFILES}")
    return profile
