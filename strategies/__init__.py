"""Server-side strategy, trainer and aggregation."""
