"""Emotion-log analytics: smoothed states, runs, episodes and the report's renderings.

Reads the emotion log (``fer_pipeline.emotion_log``); nothing in the log imports this package.
"""
