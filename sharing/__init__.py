"""Threat sharing: STIX 2.1 objects and the TAXII 2.1 server's storage, policy and audit."""
