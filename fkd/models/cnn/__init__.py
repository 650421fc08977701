"""The Keras/TensorFlow CNN, trained in two phases (Adam, then SGD fine-tuning)."""
