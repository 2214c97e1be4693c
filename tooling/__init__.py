"""Development tooling outside the runtime library: the embedded stack, the demo and its replay,
the flights workload, the fire drills and the command-line helpers."""
