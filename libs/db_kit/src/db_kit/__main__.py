"""``python -m db_kit`` runs the ``db`` command (useful where the script is not on PATH)."""

from db_kit.cli import main

main()
