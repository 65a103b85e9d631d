"""Model wrapper and safe loading, data sets and loaders, the training loop, the zoo."""
