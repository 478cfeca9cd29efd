"""Weight files: strict loading, bundled or seeded weights, hub download, conversion; imports model, common."""
