"""Reading IDX files (the MNIST / Fashion-MNIST format) into numpy.

IDX: a 4-byte big-endian magic (two zero bytes, a type code, the number of
dimensions), one big-endian int32 size per dimension, then the values in C
order, big-endian. MNIST-style images have magic 2051 (uint8, 3 dims: count,
rows, cols), labels 2049 (uint8, 1 dim: count). Files may be gzipped
(recognised by content, not by name: Debian re-gzips the originals).

No TensorFlow: this runs on machines that have only numpy and JAX.
"""

import gzip
import os
import zlib

import numpy as np

from sam_jax.errors import BadInputError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

_GZIP_MAGIC = b'\x1f\x8b'
# IDX type code -> numpy dtype (big-endian where it matters).
_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'),
    0x0D: np.dtype('>f4'),
    0x0E: np.dtype('>f8'),
}


class IdxFormatError(BadInputError):
    """A file is not a well-formed IDX file of the expected kind (bad input: a
    damaged or truncated download; a ValueError too, as BadInputError is)."""


def _read_bytes(path: str) -> bytes:
    with open(path, 'rb') as f:
        raw = f.read()
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:  # Corrupt/truncated.
            raise IdxFormatError(
                f'{path}: not a readable gzip file ({error})') from None
    return raw


def _read_magic_and_values(path: str) -> tuple[int, np.ndarray]:
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise IdxFormatError(f'{path}: {len(raw)} bytes, too short for an IDX '
                             f'header')
    zero, type_code, num_dims = raw[0:2], raw[2], raw[3]
    if zero != b'\x00\x00' or type_code not in _DTYPES or num_dims == 0:
        magic = int.from_bytes(raw[:4], 'big')
        raise IdxFormatError(
            f'{path}: bad IDX magic {magic} (0x{magic:08x}); expected 0x0000 '
            f'then a type code in {sorted(_DTYPES)} and at least 1 dimension')
    header_size = 4 + 4 * num_dims
    if len(raw) < header_size:
        raise IdxFormatError(f'{path}: {len(raw)} bytes, too short for the '
                             f'{header_size}-byte header of {num_dims} '
                             f'dimensions')
    shape = tuple(int(d) for d in np.frombuffer(raw, '>i4', num_dims, 4))
    dtype = _DTYPES[type_code]
    expected = header_size + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise IdxFormatError(
            f'{path}: header says shape {shape} of {dtype.name} '
            f'({expected} bytes with the header) but the data has '
            f'{len(raw)} bytes')
    values = np.frombuffer(raw, dtype, offset=header_size).reshape(shape)
    return (type_code << 8) | num_dims, values.astype(dtype.newbyteorder('='))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (gzipped or not) into an array of its own shape.

    Args:
        path: the file.

    Returns:
        Array with the file's dimensions, in native byte order (uint8 for
        the MNIST files).

    Raises:
        IdxFormatError: bad magic, unknown type code, or a size that does
            not match the header (truncated or trailing bytes).
    """
    return _read_magic_and_values(os.fspath(path))[1]


def _read_with_magic(path, magic: int, what: str) -> np.ndarray:
    path = os.fspath(path)
    found, values = _read_magic_and_values(path)
    if found != magic:
        raise IdxFormatError(f'{path}: IDX magic {found}, expected {magic} '
                             f'({what})')
    return values


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """uint8 images [N, rows, cols] of an IDX images file (magic 2051)."""
    return _read_with_magic(path, IMAGES_MAGIC, 'uint8 images [N, rows, cols]')


def read_idx_labels(path: str | os.PathLike) -> np.ndarray:
    """uint8 labels [N] of an IDX labels file (magic 2049)."""
    return _read_with_magic(path, LABELS_MAGIC, 'uint8 labels [N]')


def read_idx_images_and_labels(
        images_path: str | os.PathLike, labels_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """A matching images + labels pair, in the layout the trainer uses.

    Returns:
        (uint8 images [N, rows, cols, 1], int32 labels [N]).

    Raises:
        IdxFormatError: either file malformed, or their counts differ.
    """
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    if images.shape[0] != labels.shape[0]:
        raise IdxFormatError(
            f'{os.fspath(images_path)} has {images.shape[0]} images but '
            f'{os.fspath(labels_path)} has {labels.shape[0]} labels')
    return images[..., np.newaxis], labels.astype(np.int32)
