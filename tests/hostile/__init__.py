"""The hostile-input corpus: generated attacks on every reader, run through the CLI in isolated processes."""
