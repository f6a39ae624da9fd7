"""The web API (FastAPI): health, events, and later alerts, incidents, TAXII and the dashboard."""
