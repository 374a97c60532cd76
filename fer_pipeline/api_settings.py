"""Settings for the Python API (``analyze``, ``Pipeline``, ``LabelReader``): the caller's
``Settings`` (or the ``FER_*`` environment, as the CLI reads it) with the keyword arguments
on top; a value that cannot work is a ``ConfigError`` in one line, as on the command line."""

from __future__ import annotations

from pydantic import ValidationError

from fer_pipeline.errors import ConfigError
from fer_pipeline.settings import Settings


def api_settings(settings: Settings | None, **sections: dict) -> Settings:
    """``settings`` (default: read from the environment) with ``sections``' fields replaced
    (None values keep the setting).

    Raises:
        ConfigError: a value the settings refuse (the field and why).
    """
    section = ""
    try:
        s = settings if settings is not None else Settings()
        for section, fields in sections.items():  # one at a time: the error names its section
            s = s.with_updates(**{section: fields})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join([section, *(str(p) for p in first.get("loc", ()))] if section else
                         [str(p) for p in first.get("loc", ())])
        raise ConfigError(f"invalid setting {where}: {first.get('msg')}") from None
    return s
