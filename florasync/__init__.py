"""florasync: files saved into watched folders become FLORA assets, exactly once."""

__version__ = "0.1.0"
