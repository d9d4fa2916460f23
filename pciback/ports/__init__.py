"""Ports: the interfaces through which the core reaches everything outside the process."""
