"""Image classification: ImageFolder / built-in data, top-1 with its interval, softmax post-processing."""
