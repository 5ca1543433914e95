"""What every part of camfabric shares, and nothing else: the error root (errors.py), the config
loader (config.py), backoff, the clock, log-once, background threads, and the process's edges —
logging and stopping on a signal (process.py).

protocol/, capture_node/, gateway/ and subscribers/ import from here; this folder imports none
of them, so any part can be read and tested without the others.
"""
