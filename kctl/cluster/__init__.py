"""Processes and coordination: metadata, brokers, controller, replication and consumer groups."""
