"""IGLUE evaluation: loaders for the published annotation files, metrics as IGLUE computes them,
heads that answer with a generative model, the fine-tune loop and the settings that drive them."""
