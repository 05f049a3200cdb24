"""Reconcile: desired state from the files, converged into the registry, level-triggered."""
