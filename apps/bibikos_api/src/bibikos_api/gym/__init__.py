"""Gym routes of bibikos_api: members, class schedule, bookings.

``gym.router`` holds the routes, ``gym.service`` the use cases (domain errors, no HTTP),
``gym.schemas`` the bodies; none is imported here.
"""

__all__: list[str] = []
