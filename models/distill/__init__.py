"""Distilling the Weaver ensemble into a cross-encoder (query, candidate) -> P(correct).

Training side only: datasets and query-grouped splits, the sibling features, the student model (an
encoder plus an optional context head), the data regimes, the monitor with its teacher-hacking
detector, and the trainer. Serving lives in ``workers``.
"""
