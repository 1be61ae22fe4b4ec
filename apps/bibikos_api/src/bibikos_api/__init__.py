"""FastAPI app."""
