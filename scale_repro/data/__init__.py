"""Data: one internal record, real loaders, a synthetic generator and validation."""
