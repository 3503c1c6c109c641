"""``python -m mimolab``: the same command line as the ``mimolab`` script."""

from mimolab.cli import main

raise SystemExit(main())
