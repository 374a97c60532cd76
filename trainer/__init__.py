"""Offline trainer: data loading, architectures, training, evaluation and export.

Imports TensorFlow lazily inside functions so the CLI stays fast; nothing here is needed
to serve a model.
"""
