"""The declarative spec: file format models, loading with positions, validation."""
