"""Staging file for the binary family's public functions (merged into functional.py later)."""

__all__: list[str] = []
