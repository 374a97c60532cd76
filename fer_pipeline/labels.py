"""Emotion classes, defined once.

Models output the 7 classes in alphabetical order (as the tutorial's folder-based
loader did). FER2013's csv codes use another order, and FER+ another again; the maps
below are the only place those orders are written down.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
NUM_CLASSES = len(EMOTIONS)
INDEX = {name: i for i, name in enumerate(EMOTIONS)}

# FER2013 `emotion` code -> name (0=Angry 1=Disgust 2=Fear 3=Happy 4=Sad 5=Surprise 6=Neutral).
FER2013_CODE_NAMES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# FER2013 code -> model output index.
FER2013_CODE_TO_INDEX: tuple[int, ...] = tuple(INDEX[n] for n in FER2013_CODE_NAMES)

# FER+ vote columns in file order; contempt/unknown/NF have no FER2013 class.
FERPLUS_COLUMNS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF",
)
FERPLUS_TO_NAME = {
    "neutral": "neutral", "happiness": "happy", "surprise": "surprise", "sadness": "sad",
    "anger": "angry", "disgust": "disgust", "fear": "fear",
}

# Folder layouts (e.g. the Kaggle image dump) use these names; accept common spellings.
FOLDER_ALIASES = {
    "angry": "angry", "anger": "angry",
    "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "fearful": "fear",
    "happy": "happy", "happiness": "happy",
    "neutral": "neutral",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise",
}
