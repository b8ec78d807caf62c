"""The files a notice attaches (invoices, acts): named in ``<attachments><attachment>path</attachment></attachments>``.

``paths(element)`` reads the names a document gives; ``collect(root, paths)`` finds, checks and reads
the files for a gateway that carries them. A path is relative to MGR5 or absolute, and only a regular
file below MGR5's ``var/`` is read, however the path is spelled (``..``, symbolic links): a request
must not be able to mail out ``etc/billmgr.conf``. Every refusal is an ``AttachmentError`` naming the
file, raised before anything is sent.
"""

import os

from .errors import InputError

# The feature a gateway advertises in --command features when it carries attachments [ours]; the
# notification types pass a notice's <attachments> on only to such a gateway.
FEATURE = "attachments"
# [ours] Files are read only below this folder of MGR5, where BILLmanager keeps its notification files [doc];
# the documents it attaches are taken to live there too.
ALLOWED_FOLDER = "var"
# [ours] At most this many bytes of attachments in one message, all files together: mail servers commonly
# refuse messages over 25 MB, and base64 makes 20 MB of files about 27 MB of mail.
MAX_TOTAL = 20 * 1024 * 1024
DEFAULT_TYPE = "application/octet-stream"
# What a compressed file is sent as (mimetypes names the contents' type and the compression apart).
COMPRESSED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz",
                    "compress": "application/x-compress", "br": "application/x-brotli"}


class AttachmentError(InputError):
    """A file the request names that cannot be attached: missing, unreadable, outside var/ or too big."""

    error_type = "attachment"


class Attachment:
    """One file to attach: its base name, content type and bytes."""

    def __init__(self, name, content_type, data):
        self.name = name
        self.content_type = content_type
        self.data = data

    def __repr__(self):
        return "Attachment(%r, %r, %d bytes)" % (self.name, self.content_type, len(self.data))


def paths(element):
    """The paths the ``<attachments>`` child of ``element`` names, in order, blank ones skipped ([] for None)."""
    if element is None:
        return []
    return [node.text.strip() for node in element.findall("attachments/attachment") if node.text and node.text.strip()]


def collect(root, names, limit=MAX_TOTAL):
    """The files ``names`` (paths relative to the MGR5 folder ``root``, or absolute) as Attachments, each file once.

    Raises AttachmentError for the first one that is missing, unreadable, not a regular file, outside
    ``root``/var, or that takes the total over ``limit`` bytes.
    """
    allowed = os.path.realpath(os.path.join(root, ALLOWED_FOLDER))
    found, seen, total = [], set(), 0
    for name in names:
        path = resolve(root, allowed, name)
        if path in seen:
            continue
        seen.add(path)
        data = _read(name, path, limit - total, limit)
        total += len(data)
        found.append(Attachment(file_name(name), content_type(name), data))
    return found


def resolve(root, allowed, name):
    """The real path of the attachment ``name``; AttachmentError unless it lies below the folder ``allowed``."""
    if "\0" in name:
        raise AttachmentError("The attachment path '%s' holds a NUL character; the message was not sent"
                              % name.replace("\0", "\\0"), obj="attachment", value=name.replace("\0", "\\0"))
    path = os.path.realpath(os.path.join(root, name))
    if not path.startswith(allowed + os.sep):
        raise AttachmentError("The attachment '%s' is outside %s (it is %s), and only files below MGR5's %s/ are "
                              "attached; the message was not sent" % (name, allowed, path, ALLOWED_FOLDER),
                              obj="attachment", value=name)
    return path


def _read(name, path, room, limit):
    """The bytes of the regular file ``path`` (the attachment ``name``): AttachmentError if more than ``room``."""
    import errno
    import stat
    try:
        # O_NOFOLLOW: the resolved path must not have become a link since; O_NONBLOCK: a FIFO must not hang us.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.ENOENT:
            reason = "does not exist (%s)" % path
        else:
            reason = "cannot be read (%s: %s)" % (path, e.strerror)
        raise AttachmentError("The attachment '%s' %s; the message was not sent" % (name, reason),
                              obj="attachment", value=name)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise AttachmentError("The attachment '%s' (%s) is not a regular file; the message was not sent"
                              % (name, path), obj="attachment", value=name)
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(max(room, 0) + 1)
        except OSError as e:
            raise AttachmentError("The attachment '%s' cannot be read (%s: %s); the message was not sent"
                                  % (name, path, e.strerror), obj="attachment", value=name)
    if len(data) > room:
        raise AttachmentError("The attachment '%s' (%s) takes the message's attachments over %s in all, the limit "
                              "(attachments.MAX_TOTAL); the message was not sent" % (name, path, _megabytes(limit)),
                              obj="attachment", value=name)
    return data


def file_name(name):
    """The name a recipient sees: the path's last part, control characters (line breaks too) made ``_``."""
    return "".join(c if c.isprintable() else "_" for c in os.path.basename(name))


def content_type(name):
    """The content type of a file name's extension (``mimetypes``), else application/octet-stream."""
    import mimetypes
    import re
    kind, compression = mimetypes.guess_type(os.path.basename(name), strict=False)
    if compression:
        return COMPRESSED_TYPES.get(compression, DEFAULT_TYPE)
    # a type from the system's mime.types goes into a header as it is: only a plain type/subtype token is taken
    if kind and re.match(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*\Z", kind.lower()):
        return kind.lower()
    return DEFAULT_TYPE


def _megabytes(size):
    """A size in bytes for a sentence: ``20 MB``, or the bytes when it is not whole megabytes."""
    return "%d MB" % (size // (1024 * 1024)) if size % (1024 * 1024) == 0 else "%d bytes" % size
