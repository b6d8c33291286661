"""User-facing errors: each says what went wrong and what to do about it.

The CLI prints a CbirError on one line and exits 2; the web app answers it as 4xx JSON.
Anything that is not a CbirError is a bug and keeps its stack trace.
"""


class CbirError(Exception):
    """An error the user can fix (bad input, missing data, wrong configuration)."""


class DataNotFoundError(CbirError):
    """A dataset or file the user asked for is not there."""


class ChecksumError(CbirError):
    """A downloaded or cached file does not match its published checksum."""


class ImageDecodeError(CbirError):
    """An image is corrupt, truncated, of an unknown format, or too large to decode safely."""


class DimensionMismatchError(CbirError):
    """Vectors do not have the dimension an index or collection was built with."""


class UnknownNameError(CbirError):
    """A registry name (extractor, backend) that does not exist; the message lists valid ones."""


class CollectionError(CbirError):
    """A collection folder is missing, incompatible or inconsistent."""
