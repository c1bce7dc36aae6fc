"""Staging file for the pair family's public functions (merged into functional.py later)."""

__all__: list[str] = []
