"""ridehail ingestion edge: GPS pings over HTTP, written to Postgres (rest) or to the broker (rest-kafka)."""
