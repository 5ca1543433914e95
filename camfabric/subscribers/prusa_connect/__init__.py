"""Uploads the newest JPEG of each configured camera to Prusa Connect at a fixed interval."""
