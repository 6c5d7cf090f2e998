"""runnerd: run containerized jobs over a REST API."""

__version__ = "0.1.0"
