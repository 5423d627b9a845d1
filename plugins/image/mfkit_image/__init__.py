"""mfkit-image: images for mfkit (plugin API v2).

Registers the modalities ``image`` (embedded digits and MNIST, or any image folder) and
``image_latents`` (pre-encoded latent shards, optional decoding through the user's own VAE), the
backbones ``unet`` (CIFAR-10-style U-Net) and ``dit`` (adaLN-Zero DiT, tiny .. XL/2), and the
evaluator ``image`` (a locally trained classifier's feature space, no downloaded weights).
"""
__version__ = "0.1.0"
