"""reconciler: a declarative GitOps reconciler daemon for ML fleets."""

__version__ = "0.1.0"
