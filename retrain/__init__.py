"""retrain: transfer learning for folders of images.

Pipeline stages, one module each, in the order data flows:
  dataset (find and split images) -> modules (resolve the feature extractor)
  -> bottlenecks (compute or load cached features) -> train (the new softmax layer)
  -> evaluate -> export.  `label_image` reads only what export wrote.
"""

__version__ = "0.1.0"
