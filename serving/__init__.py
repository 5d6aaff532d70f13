"""Loading and scoring model bundles (the Flask service builds on this)."""
