"""Procedural training data for the small latent diffusion demo model."""
