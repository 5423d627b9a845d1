"""Pure tensor math of MeanFlow: time sampling, paths, JVPs, objectives, samplers."""
