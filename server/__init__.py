"""livehead server package."""
