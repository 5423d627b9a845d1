"""Image sources (embedded digits and MNIST, folders, latent shards) and the tensors made from them."""
