"""Staging file for the triplet family's public functions (merged into functional.py later)."""

__all__: list[str] = []
