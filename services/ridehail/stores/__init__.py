"""ridehail.stores."""
