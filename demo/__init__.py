"""The demo clip `fer-pipeline up --source demo` plays (data, read through ``importlib.resources``)."""
