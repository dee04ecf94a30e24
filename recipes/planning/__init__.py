"""2. Planning: a validated recipe -> ordered stages with typed settings, data and folders, and their cost (no torch)."""
