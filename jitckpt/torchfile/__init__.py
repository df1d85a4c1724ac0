"""The torch file: ``torch.save``'s zip archive read and written without torch's unpickler (a decoder that
builds plain data only, within bounds), byte for byte what ``torch.save`` writes.

May import: errors, compat, storage, tensors.
"""
