"""FID / Inception Score of any checkpoint with stock torch-fidelity, from a local Inception."""
