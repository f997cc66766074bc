"""The API key as a value that cannot leak by accident: its repr and str are masked.

Owns nothing but the wrapper; reading the key from env, file or credentials is config.py's job.
"""

from __future__ import annotations


class Secret:
    """A secret string. ``reveal()`` is the only way to read it; everything else prints ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret, for the one place that must send it (the Authorization header)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Secret is not pickled")
