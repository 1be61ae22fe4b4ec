"""What developers and operators run, never an app.

``db_tools.cli`` (the ``db`` command, ``db new``), ``db_tools.studio``, ``db_tools.embedded``
(the development PostgreSQL), ``db_tools.remote`` (deploying migrations from a container)
and ``db_tools.testing`` (the pytest plugin). Nothing at run time imports this package.

The package itself exports no names: import the module you need (``from db_tools.testing
import run_sql``), so using one tool never imports the others.
"""

__all__: list[str] = []
