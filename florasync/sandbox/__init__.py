"""A FLORA-compatible sandbox: the API, an ImageKit-like upload target and fault injection.

Used by the tests and by ``florasync sandbox`` (docs/design.md, "The sandbox"). It never
imports florasync's client code.
"""

from florasync.sandbox.faults import Faults
from florasync.sandbox.server import Sandbox, describe

__all__ = ["Faults", "Sandbox", "describe"]
