"""The PyTorch heatmap network: one heatmap per keypoint, decoded by soft-argmax."""
