"""Event-source scalers: one module per source type."""
