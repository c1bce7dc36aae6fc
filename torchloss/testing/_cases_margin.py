"""Staging file for the multi-class margin family's case-table entries (merged into cases.py later)."""

from __future__ import annotations

_MARGIN_CASES: list = []
