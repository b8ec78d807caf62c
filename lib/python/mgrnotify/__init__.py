"""mgrnotify: the shared library of our BILLmanager notification and gateway modules.

One job per module: ``runner`` (the command-line protocol), ``xmlio`` (XML in and out), ``config``,
``log`` and ``redact``, ``db`` (MySQL through the command-line client), ``mgrctl``, ``template``,
``xmljson`` and ``macros``. Nothing here is imported eagerly: ``--command features`` must start fast.
"""

__version__ = "0.1.0"
