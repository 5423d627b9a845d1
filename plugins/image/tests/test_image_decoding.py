"""Decoding files to pictures: EXIF orientation, 16-bit grey, tRNS transparency, the cache key's versions."""
from __future__ import annotations

import numpy as np
import PIL
import pytest
from PIL import Image

from mfkit_image.data import folder as folders


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, 32:] = 255  # stored landscape: left black, right white; shown rotated 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=100)
    picture = folders.decode_file(tmp_path / "turned.jpg", 16, 1)[:, :, 0].astype(float)
    assert picture[0].mean() < 30 and picture[-1].mean() > 225  # upright: black above, white below


def test_16_bit_grey_is_scaled_to_8_bits(tmp_path):
    values = np.full((16, 16), 32768, np.uint16)
    values[:8] = 1000
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    for channels in (1, 3):
        picture = folders.decode_file(tmp_path / "deep.png", 16, channels)
        assert (picture[0] == 4).all() and (picture[-1] == 128).all()  # 1000 / 257 and 32768 / 257


@pytest.mark.parametrize("mode, transparent", [("L", 0), ("RGB", (0, 0, 0))])
def test_trns_transparency_is_laid_on_white(tmp_path, mode, transparent):
    black = Image.new(mode, (16, 16), transparent)
    black.save(tmp_path / "clear.png", transparency=transparent)
    assert "transparency" in Image.open(tmp_path / "clear.png").info
    assert (folders.decode_file(tmp_path / "clear.png", 8, 3) == 255).all()


def test_cache_key_holds_the_decoder_and_pillow_versions(tmp_path, monkeypatch):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    listing = folders.list_folder(tmp_path, classes=False)
    before = folders.listing_key(listing, 8, 3)
    monkeypatch.setattr(folders, "DECODE_VERSION", folders.DECODE_VERSION + 1)
    newer_decoder = folders.listing_key(listing, 8, 3)
    monkeypatch.setattr(PIL, "__version__", "0.0.1")
    assert len({before, newer_decoder, folders.listing_key(listing, 8, 3)}) == 3
