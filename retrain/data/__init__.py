"""Stage 1, images: find the class folders and their image files (dataset), split them stably (split), decode (images), resize for the network (preprocess) and distort (distort, distortions)."""
