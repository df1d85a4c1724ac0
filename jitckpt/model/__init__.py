"""The JiT architecture: its variants and how to read them off a state dict."""
