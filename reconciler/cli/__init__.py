"""The `reconciler` command line."""
