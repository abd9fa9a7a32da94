"""Code shared by every ridehail service: contracts, settings, Kafka, Postgres, logging, health."""
