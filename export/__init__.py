"""livehead export package."""
