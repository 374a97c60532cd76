"""The emotion log: every label the logger stores, in SQLite or PostgreSQL, and how it is read.

``open_store`` opens a log for writing (the ``LabelStore`` protocol); ``reader`` reads it in
column batches for analytics, selected by a ``Selection``. Nothing here imports the
analytics or the consumers: dependencies run from them to here.
"""
