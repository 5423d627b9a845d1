"""Image backbones called as ``model(z, r, t, cond=None)``: a CIFAR-10-style U-Net and an adaLN-Zero DiT."""
