"""Surge pricing service: demand and supply per H3 cell -> multiplier changes on a topic."""
