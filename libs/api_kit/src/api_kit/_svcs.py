"""svcs, imported once, without the test client it does not need at run time.

Importing svcs loads svcs.fastapi and svcs.starlette, which import the test clients
(``fastapi.testclient``, ``starlette.testclient``) for a type annotation: httpx and httpx's
command line (rich, click, pygments), ~0.1 s of every process start
(bench/import_time.py), and a warning about httpx. Both fall back to ``Any`` for that
annotation when the import fails, so the imports are refused while svcs loads and allowed
again right after (tests import the test clients as usual). A test client loaded already
is left alone.
"""

import sys
import warnings

_TEST_CLIENTS = ("starlette.testclient", "fastapi.testclient")

_refused = [name for name in _TEST_CLIENTS if name not in sys.modules]
for _name in _refused:
    sys.modules[_name] = None  # type: ignore[assignment]  # None: importing it raises
try:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        import svcs
        import svcs.fastapi
finally:
    for _name in _refused:
        if sys.modules.get(_name, False) is None:
            del sys.modules[_name]

__all__ = ["svcs"]
