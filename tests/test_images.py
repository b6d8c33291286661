import io

import numpy as np
import pytest
from PIL import Image

from cbir.errors import ImageDecodeError
from cbir.images import DecodeLimits, decode_image, decode_many, read_image_file

from .conftest import encode, png_header_claiming


def test_decodes_rgb_and_resizes():
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20] = (255, 0, 0)
    out = decode_image(encode(array), size=(32, 32))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert tuple(out[16, 2]) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK"])
def test_every_mode_becomes_rgb(mode):
    array = np.full((16, 16, 3), 100, np.uint8)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = decode_image(encode(array, fmt, mode=mode))
    assert out.shape == (16, 16, 3)


def test_transparent_pixels_are_composited_on_white():
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    assert (decode_image(buffer.getvalue()) == 255).all()


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    array = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    out = decode_image(buffer.getvalue())
    assert 0 < out.max() <= 255 and out.min() == 0 and len(np.unique(out)) > 10


def test_exif_orientation_is_applied():
    array = np.zeros((10, 30, 3), np.uint8)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    assert decode_image(buffer.getvalue()).shape == (30, 10, 3)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"definitely not an image", "known format"),
        (encode(np.zeros((64, 64, 3), np.uint8), "JPEG")[:200], "corrupt or truncated"),
        (png_header_claiming(40000, 40000), "pixel limit"),
        (b"P6\n4 4\n255\n" + bytes(48), "not accepted"),  # PPM: decodable, not allowed
    ],
    ids=["empty", "garbage", "truncated", "bomb-header", "unaccepted-format"],
)
def test_hostile_or_broken_input_is_a_clear_error(data, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data, name="upload.png")


def test_size_limit_on_bytes():
    data = encode(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ImageDecodeError, match="byte limit"):
        decode_image(data, limits=DecodeLimits(max_bytes=10))


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="nope.png"):
        read_image_file(tmp_path / "nope.png")


def test_decode_many_reports_failures_without_stopping(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(encode(np.zeros((8, 8, 3), np.uint8)))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    batch = decode_many([good, bad, good], size=(4, 4))
    assert batch.ok == [0, 2]
    assert batch.images.shape == (2, 4, 4, 3)
    assert batch.failures[0][0] == 1 and "bad.png" in batch.failures[0][1]
