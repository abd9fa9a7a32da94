"""ridehail: an Uber-style ride-hailing system that measures event-driven against REST."""

__version__ = "0.1.0"
