"""5. Run: every stage in order, resumable: the manifest, fingerprints, atomic publishing."""
