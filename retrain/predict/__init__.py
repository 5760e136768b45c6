"""Stage 5, prediction: load what export wrote and label images with it (label_image); reads nothing else."""
