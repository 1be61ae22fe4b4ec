"""``python -m db_tools`` runs the ``db`` command (useful where the script is not on PATH)."""

from db_tools.cli import main

# Guarded: tenant migration workers are spawned processes that re-import __main__.
if __name__ == "__main__":
    main()
