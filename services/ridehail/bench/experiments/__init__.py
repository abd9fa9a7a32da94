"""The experiments: REST vs events for the same GPS pings, measured side by side."""
