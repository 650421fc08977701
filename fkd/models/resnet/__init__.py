"""The PyTorch ResNet regressor: 96x96 face -> 30 (or 34) coordinates."""
