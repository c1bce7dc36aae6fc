"""Staging file for the pair family's case-table entries (merged into cases.py later)."""

from __future__ import annotations

_PAIR_CASES: list = []
