"""The capture node: the one process that owns its cameras and publishes them on the fabric."""
