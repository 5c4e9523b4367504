"""Where models go and run: device profiles (``export_targets/*.yaml``), deployment bundles (an
artifact plus the standalone device runner) and the runner itself."""
