"""The domain: the model's contract (spec) and pure functions over data and decisions.

Imports nothing from the layers above it (steps, adapters, serving, ui)."""
