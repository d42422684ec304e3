"""Command-line tools (weight conversion) that need no accelerator and no torch."""
