"""bibikos_api: bibikos_db wired into the shared modules plus gym routes.

Built by ``bibikos_api.main.create_app``; nothing is imported here, the app is built when
the server calls the factory (``uvicorn bibikos_api.main:create_app --factory``).
"""

__all__: list[str] = []
