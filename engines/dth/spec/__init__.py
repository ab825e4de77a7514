"""The TransferTask spec model and everything derived from it."""
