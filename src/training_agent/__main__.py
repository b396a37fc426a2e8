"""`python -m training_agent` is the `training-agent` command."""

from training_agent.cli import main

raise SystemExit(main())
