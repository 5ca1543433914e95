"""The gateway: keeps the newest frame of every camera and serves the HTTP camera API."""
