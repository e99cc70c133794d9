"""``python -m chaos [--runs N] [--smoke] [--only NAME]``."""

from chaos.cli import main

raise SystemExit(main())
