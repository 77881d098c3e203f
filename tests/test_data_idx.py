"""Tests of sam_jax.data.idx on IDX files written here byte by byte."""

import contextlib
import gzip
import os
import struct

import numpy as np
import pytest

from sam_jax.data import idx

FASHION_DIR = '/usr/share/datasets/fashion-mnist'


def write_idx(path, type_code, shape, values, fmt, gz=False, extra=b''):
    """An IDX file from a flat value list, with struct (not numpy)."""
    raw = bytes([0, 0, type_code, len(shape)])
    raw += b''.join(struct.pack('>i', d) for d in shape)
    raw += b''.join(struct.pack('>' + fmt, v) for v in values) + extra
    with open(path, 'wb') as f:
        f.write(gzip.compress(raw) if gz else raw)
    return str(path)


@contextlib.contextmanager
def one_line_error_naming(path, match):
    """pytest.raises for an IdxFormatError of one line that names `path`."""
    with pytest.raises(idx.IdxFormatError, match=match) as info:
        yield
    message = str(info.value)
    assert '\n' not in message and str(path) in message, message


@pytest.mark.parametrize('gz', [False, True])
def test_reads_images_and_labels(tmp_path, gz):
    rng = np.random.default_rng(0)
    pixels = [int(v) for v in rng.integers(0, 256, 3 * 4 * 5)]
    labels = [7, 0, 255]
    images_path = write_idx(tmp_path / 'images', 0x08, (3, 4, 5), pixels, 'B',
                            gz)
    labels_path = write_idx(tmp_path / 'labels', 0x08, (3,), labels, 'B', gz)
    images = idx.read_idx_images(images_path)
    assert images.dtype == np.uint8 and images.shape == (3, 4, 5)
    # C order: pixel (n, r, c) is value n * 20 + r * 5 + c of the file.
    assert images[1, 2, 3] == pixels[1 * 20 + 2 * 5 + 3]
    assert images.ravel().tolist() == pixels
    assert idx.read_idx_labels(labels_path).tolist() == labels
    pair_images, pair_labels = idx.read_idx_images_and_labels(images_path,
                                                              labels_path)
    assert pair_images.shape == (3, 4, 5, 1) and pair_images.dtype == np.uint8
    assert pair_labels.dtype == np.int32 and pair_labels.tolist() == labels


@pytest.mark.parametrize('type_code,fmt,values', [
    (0x09, 'b', [-128, -1, 0, 127]),
    (0x0B, 'h', [-32768, -2, 513, 32767]),
    (0x0C, 'i', [-2**31, -5, 65536 + 3, 2**31 - 1]),
    (0x0D, 'f', [-1.5, 0.0, 0.25, 3e38]),
    (0x0E, 'd', [-1e300, 0.1, 2.0, 1e-300]),
])
def test_reads_every_type_big_endian(tmp_path, type_code, fmt, values):
    path = write_idx(tmp_path / 'x', type_code, (2, 2), values, fmt)
    array = idx.read_idx(path)
    assert array.shape == (2, 2)
    assert array.dtype.isnative
    np.testing.assert_array_equal(array.ravel(), np.array(values, array.dtype))


def test_bad_magic(tmp_path):
    path = tmp_path / 'bad'
    path.write_bytes(b'\x01\x00\x08\x01' + struct.pack('>i', 1) + b'\x05')
    with one_line_error_naming(path, 'bad IDX magic'):
        idx.read_idx(path)
    path.write_bytes(b'\x00\x00\x07\x01' + struct.pack('>i', 1) + b'\x05')
    with one_line_error_naming(path, 'bad IDX magic'):
        idx.read_idx(path)
    path.write_bytes(b'\x00\x00')
    with one_line_error_naming(path, 'too short'):
        idx.read_idx(path)


def test_size_must_match_header(tmp_path):
    truncated = tmp_path / 'truncated'
    truncated.write_bytes(b'\x00\x00\x08\x03' + struct.pack('>3i', 2, 2, 2)
                          + bytes(7))
    with one_line_error_naming(truncated, r'shape \(2, 2, 2\)'):
        idx.read_idx(truncated)
    trailing = write_idx(tmp_path / 'trailing', 0x08, (2,), [1, 2], 'B',
                         gz=True, extra=b'\x00')
    with one_line_error_naming(trailing, 'has 11 bytes'):
        idx.read_idx(trailing)
    header_cut = tmp_path / 'header_cut'
    header_cut.write_bytes(b'\x00\x00\x08\x03' + struct.pack('>i', 2))
    with one_line_error_naming(header_cut, 'too short'):
        idx.read_idx(header_cut)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / 'x.gz'
    good = gzip.compress(b'\x00\x00\x08\x01' + struct.pack('>i', 50)
                         + bytes(range(50)))
    path.write_bytes(good[:len(good) // 2])
    with one_line_error_naming(path, 'not a readable gzip'):
        idx.read_idx(path)


def test_wrong_kind_and_count_mismatch(tmp_path):
    images = write_idx(tmp_path / 'images', 0x08, (2, 1, 1), [1, 2], 'B')
    labels = write_idx(tmp_path / 'labels', 0x08, (3,), [1, 2, 3], 'B')
    with one_line_error_naming(labels, 'expected 2051'):
        idx.read_idx_images(labels)
    with one_line_error_naming(images, 'expected 2049'):
        idx.read_idx_labels(images)
    int_labels = write_idx(tmp_path / 'int_labels', 0x0C, (2,), [1, 2], 'i')
    with one_line_error_naming(int_labels, 'expected 2049'):
        idx.read_idx_labels(int_labels)
    with one_line_error_naming(labels, '2 images but'):
        idx.read_idx_images_and_labels(images, labels)


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR),
                    reason='Debian dataset-fashion-mnist not installed')
def test_real_fashion_mnist_files():
    splits = {}
    for split, prefix, size in (('train', 'train', 60_000),
                                ('test', 't10k', 10_000)):
        images, labels = idx.read_idx_images_and_labels(
            f'{FASHION_DIR}/{prefix}-images-idx3-ubyte.gz',
            f'{FASHION_DIR}/{prefix}-labels-idx1-ubyte.gz')
        assert images.shape == (size, 28, 28, 1) and images.dtype == np.uint8
        # Balanced classes: 6,000 train and 1,000 test images per class.
        np.testing.assert_array_equal(np.bincount(labels, minlength=10),
                                      np.full(10, size // 10))
        splits[split] = images, labels
    # The publisher's order: both splits start with an ankle boot (9).
    assert splits['train'][1][:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert splits['test'][1][:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    # The widely published training statistics 0.2860 / 0.3530 (x 255).
    pixels = splits['train'][0].astype(np.float64)
    assert abs(pixels.mean() - 72.94) < 0.01
    assert abs(pixels.std() - 90.02) < 0.01
