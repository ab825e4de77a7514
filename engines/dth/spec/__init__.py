"""The TransferTask spec model and everything derived from it: dth.spec.model (the S3 task and the shared
bases), dth.spec.image (the image task), dth.spec.task (the manifest: the union of both)."""
