"""Staging file for the probabilistic family's case-table entries (merged into cases.py later)."""

CASES: list = []
