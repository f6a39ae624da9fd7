"""Lianfang kernel: settings, the event schema and the Elasticsearch store shared by all packages."""
