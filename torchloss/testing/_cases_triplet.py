"""Staging file for the triplet family's case-table entries (merged into cases.py later)."""

from __future__ import annotations

_TRIPLET_CASES: list = []
