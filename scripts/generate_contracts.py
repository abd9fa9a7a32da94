#!/usr/bin/env python3
"""Regenerate docs/events/*.schema.json and .env.example from the code."""

from ridehail.common.contracts import write_all

if __name__ == "__main__":
    for path in write_all():
        print(f"wrote {path}")
