"""cbir: content-based image retrieval engine."""

__version__ = "0.1.0"
