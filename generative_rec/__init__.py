"""generative_rec package."""
