"""ridehail replay service."""
