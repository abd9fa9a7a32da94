"""ridehail.domain."""
