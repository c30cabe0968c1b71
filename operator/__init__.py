"""Kameng: a Kubernetes operator for card-platform sub-sites (分站)."""

__version__ = "0.1.0"
