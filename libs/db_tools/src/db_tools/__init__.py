"""What developers and operators run, never an app.

``db_tools.cli`` (the ``db`` command, ``db new``), ``db_tools.studio``, ``db_tools.embedded``
(the development PostgreSQL), ``db_tools.remote`` (deploying migrations from a container)
and ``db_tools.testing`` (the pytest plugin). Nothing at run time imports this package.
"""

__all__: list[str] = []
