"""fer-pipeline: real-time facial emotion recognition over Redis streams.

The core package owns what every role shares: settings, message schemas, stream
transport, model loading and the CLI. The role packages (``fer_pipeline.producers``,
``.workers``, ``.consumers``, ``.trainer``) build on it; the core never imports them
at module level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

# The Python API (README "Python API"). Imported on first use (PEP 562), so that
# `import fer_pipeline` stays cheap: no OpenCV, LiteRT or Redis client until one is touched.
_API = {
    "analyze": "fer_pipeline.analyzer",
    "Analyzer": "fer_pipeline.analyzer",
    "FaceResult": "fer_pipeline.analyzer",
    "Pipeline": "fer_pipeline.local_pipeline",
    "PipelineError": "fer_pipeline.local_pipeline",
    "LabelReader": "fer_pipeline.label_reader",
    "Label": "fer_pipeline.messages",
}
__all__ = ["Analyzer", "FaceResult", "Label", "LabelReader", "Pipeline", "PipelineError", "__version__", "analyze"]

if TYPE_CHECKING:
    from fer_pipeline.analyzer import Analyzer, FaceResult, analyze
    from fer_pipeline.label_reader import LabelReader
    from fer_pipeline.local_pipeline import Pipeline, PipelineError
    from fer_pipeline.messages import Label


def __getattr__(name: str):
    """The API's names, imported from their modules on first access."""
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'fer_pipeline' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily imported ones included."""
    return sorted([*globals(), *_API])
