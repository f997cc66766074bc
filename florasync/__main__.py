"""``python -m florasync``: the same entry point as the ``florasync`` console script."""

from florasync.cli import main

raise SystemExit(main())
