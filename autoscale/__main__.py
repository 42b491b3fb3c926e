"""`python -m autoscale` runs the command-line interface."""

from autoscale.cli import main

raise SystemExit(main())
