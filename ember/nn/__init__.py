"""Neural-network building blocks."""

from ember.nn import functional  # noqa: F401
