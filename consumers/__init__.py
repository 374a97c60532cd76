"""Consumers: the display (overlays drawn into windows or MP4s) and the logger (per-person
emotion timelines in SQLite).

Nothing is imported here so that importing one consumer never pulls in the other's
dependencies (OpenCV for the display, sqlite3 for the logger).
"""
