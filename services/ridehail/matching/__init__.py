"""ridehail matching service."""
