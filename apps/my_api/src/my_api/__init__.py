"""my_api: core_db wired into the shared feature modules; built by ``my_api.main.create_app``.

Nothing is imported here: the app is built when the server calls the factory
(``uvicorn my_api.main:create_app --factory``).
"""

__all__: list[str] = []
