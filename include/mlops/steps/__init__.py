"""The loop's steps: each gathers its inputs through the adapters, calls the domain, records."""
