"""Developer tools that are not part of the service (run from the repository root)."""
