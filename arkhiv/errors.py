"""Errors shared by every room, mapped to exit statuses by the CLI and to HTTP codes by the web."""


class ArkhivError(Exception):
    """The archive found a problem with what it was given or holds (exit status 1)."""

    exit_code = 1


class ConfigError(ArkhivError):
    """The configuration or the way Arkhiv was started is wrong (exit status 2)."""

    exit_code = 2


class CatalogUnavailable(ConfigError):
    """The catalog database cannot be reached or opened."""
