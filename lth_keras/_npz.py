"""Reading `.npz` files that may be damaged or crafted, with bounded memory.

`np.load` allocates an array as its header declares before reading its data,
so a few bytes claiming a shape of billions make it allocate gigabytes. Here
each array's declared size is checked first against what its member of the
archive can hold: its stored size, or for deflate (which expands data at
most 1032-fold) 1032 times its compressed size.
"""

import math
import zipfile

import numpy as np

__all__ = ["read_npz"]

#: Deflate expands data at most 1032-fold: an array declaring more bytes than
#: that times its compressed size is a lie of a damaged or crafted file.
_DEFLATE_RATIO = 1032
_NUMERIC = "biufc"  # bool, signed and unsigned ints, floats, complex


def read_npz(path):
    """The arrays of an `.npz` file, each checked against the bytes the archive holds for it.

    Like `np.load(path, allow_pickle=False)` read in full, but an array whose
    header declares more bytes than its compressed data can expand to is
    refused before anything is allocated, as are non-numeric arrays.

    Args:
        path: The file.

    Returns:
        `{name: array}`.

    Raises:
        ValueError: If an array is malformed, truncated or declares more
            data than the file holds (the message names it).
        OSError, zipfile.BadZipFile, zlib.error, EOFError: If the file
            cannot be read as a zip archive.

    Example:

    ```python
    arrays = read_npz("masks/round_01.npz")
    ```
    """
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            if key == info.filename or key in arrays:
                raise ValueError(f"member {info.filename!r} is not one array of an .npz")
            if info.compress_type == zipfile.ZIP_STORED:
                limit = info.compress_size
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                limit = info.compress_size * _DEFLATE_RATIO
            else:
                raise ValueError(f"array {key!r} uses a compression .npz files do not use")
            with archive.open(info) as stream:
                arrays[key] = _read_array(stream, key, limit)
    return arrays


def _read_array(stream, key, limit):
    """One `.npy` from a stream, its declared size checked against `limit` bytes first."""
    version = np.lib.format.read_magic(stream)
    read_header = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }.get(version)
    if read_header is None:
        raise ValueError(f"array {key!r} has an unknown .npy version {version}")
    shape, fortran_order, dtype = read_header(stream)
    if dtype.kind not in _NUMERIC or dtype.hasobject:
        raise ValueError(f"array {key!r} holds {dtype}, not numbers")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise ValueError(f"array {key!r} declares the shape {shape}")
    size = math.prod(shape) * dtype.itemsize
    if size > limit:
        raise ValueError(
            f"array {key!r} declares the shape {shape} ({size} bytes), more than the file "
            f"holds for it (at most {limit} bytes)"
        )
    buffer = bytearray(size)
    view, filled = memoryview(buffer), 0
    while filled < size:
        count = stream.readinto(view[filled:])
        if not count:
            raise ValueError(f"array {key!r} is truncated ({filled} of {size} bytes)")
        filled += count
    if stream.read(1):  # also makes zipfile check the member's CRC
        raise ValueError(f"array {key!r} has data after its {size} bytes")
    array = np.frombuffer(buffer, dtype=dtype)
    return array.reshape(shape, order="F" if fortran_order else "C")
