"""Test and benchmark support: throw-away brokers, databases and ports. Never imported by a service."""
