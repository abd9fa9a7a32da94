"""ridehail simulator service."""
