"""ridehail gateway service."""
