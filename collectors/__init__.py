"""Collectors: inputs that read logs, formats that parse them into ECS, and the ingest pipeline."""
