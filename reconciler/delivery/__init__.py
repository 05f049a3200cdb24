"""Delivery: body templates, auth, signing, batching and the workers that drive the sinks."""
