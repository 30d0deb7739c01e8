"""Data: preparation of unpaired datasets (``prepare``) and their loading for training (``dataset``)."""
