"""fer-pipeline: real-time facial emotion recognition over Redis streams.

The core package owns what every role shares: settings, message schemas, stream
transport, model loading and the CLI. The role packages (``fer_pipeline.producers``,
``.workers``, ``.consumers``, ``.trainer``) build on it; the core never imports them
at module level.
"""

__version__ = "0.1.0"
