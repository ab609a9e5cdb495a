"""The edge agent that runs on a Raspberry Pi."""

# The one place the version is written (pyproject reads it); no importlib.metadata,
# which would cost every agent ~3 MB of memory for one string.
__version__ = "0.1.0"
