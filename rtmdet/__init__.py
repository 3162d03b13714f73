"""RTMDet in plain PyTorch."""
