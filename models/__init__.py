"""The shipped emotion model and face-detector models (data, read through ``importlib.resources``)."""
