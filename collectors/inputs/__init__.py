"""Inputs: where records come from (files, stdin, ...), each yielding (record, origin) pairs."""
