"""The TransferTask spec model and everything derived from it."""

# The model first: it imports dth.spec.image, which imports the model's bases back.
from dth.spec import model as model
