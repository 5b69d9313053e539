"""``python -m edgesearch`` runs the CLI."""

from edgesearch.cli import main

main()
