"""The one place where the Elasticsearch server version is pinned.

9.5.4 is the newest 9.x `integ-test-zip` that resolved from Maven Central on 2026-11-29
(9.5.5 and 9.5.6 were refused). The Python client is pinned to the same major in
pyproject.toml (`elasticsearch>=9.1,<10`).
"""

ELASTICSEARCH_VERSION = "9.5.4"
ELASTICSEARCH_ARTIFACT = "org.elasticsearch.distribution.integ-test-zip:elasticsearch"
MINIMUM_JAVA_MAJOR = 21
