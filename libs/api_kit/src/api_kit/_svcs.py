"""svcs, imported once with starlette's import-time testclient warning silenced.

Importing svcs loads svcs.fastapi, which imports fastapi.testclient, which warns about
httpx on every app start although no test client is used.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    import svcs
    import svcs.fastapi

__all__ = ["svcs"]
