"""ridehail auth service."""
