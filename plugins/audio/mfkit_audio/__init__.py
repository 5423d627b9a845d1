"""mfkit-audio: speech for mfkit as log-mel spectrograms.

* modality ``speech``: a speech folder (WAV/FLAC/OGG, labels from sub-folders, file names or a CSV/TSV
  manifest) or the embedded eSpeak NG spoken-digit corpus, as normalised log-mel spectrograms
  (1, n_mels, frames); samples are written as WAV (Griffin-Lim by default) and a PNG of the spectrograms.
* backbone ``spec_unet``: a U-Net over (mel, time) with adaptive (scale, shift) conditioning on the two
  times and the class.
* evaluator ``digit_classifier``: class accuracy, Fréchet distance and an inception-style score from a
  spectrogram classifier trained locally on the real data.
"""
__version__ = "0.1.0"
