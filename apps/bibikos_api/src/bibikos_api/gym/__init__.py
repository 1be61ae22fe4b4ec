"""Gym routes of bibikos_api: members, class schedule, bookings."""
