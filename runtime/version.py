"""The package's version, in one place: the command's --version and the services' user agents."""

__version__ = "0.1.0"
