"""The HTTP API: a read-mostly view of the registry, runtime actions, health."""
