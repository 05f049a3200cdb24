"""Events: the catalog of event types, subscription patterns and CEL filters."""
