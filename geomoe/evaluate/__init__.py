"""Evaluating embeddings: :mod:`.probe` linear probes with cross-validation and reports,
:mod:`.labels` BigEarthNet label vocabularies.
"""
