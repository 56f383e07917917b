"""The ``audiomemory`` command line: generate, serve, up, models, describe, reproduce."""
