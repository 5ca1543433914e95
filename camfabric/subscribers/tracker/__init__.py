"""The rate-limited location tracker: object positions in workspace millimetres."""
