"""hrformer family (being written)."""
