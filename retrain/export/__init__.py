"""Stage 4, export: the SavedModel and labels file that label_image reads (saved_model), and the TensorFlow Lite conversion (tflite_export)."""
