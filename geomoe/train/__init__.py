"""Pretraining: :mod:`.loop` the training loop, :mod:`.stream` the shuffled chip stream,
:mod:`.state` resumable run state, :mod:`.retrain` scheduled retraining.
"""
