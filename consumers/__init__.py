"""Stream consumers: the display (overlays drawn into windows or MP4s, ``display``), the
logger (labels into the emotion log, ``label_logger``) and what they share (``overlay``,
``joiner``).

Nothing is imported here so that importing one consumer never pulls in the other's
dependencies (OpenCV for the display, a database driver for the logger).
"""
