"""Payment processors: one adapter per processor behind the small interface in ``base``."""
