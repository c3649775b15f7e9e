"""focalnet family (being written)."""
