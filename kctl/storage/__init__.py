"""Storage: one partition's bytes on disk."""
