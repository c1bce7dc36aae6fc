"""Staging file for the multi-class margin family's public functions (merged into functional.py later)."""

__all__: list[str] = []
