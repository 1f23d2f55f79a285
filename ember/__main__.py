"""``python -m ember``: the ``ember`` command line (see ember/cli.py)."""

from ember.cli import main

raise SystemExit(main())
