"""The exceptions of mgrnotify: one base class, each carrying the error document it becomes.

A module raises one of these with a sentence an admin can act on; the runner turns it into
``<doc><error type=".." object=".."><param name="value">..</param><msg>sentence</msg></error></doc>``
and a non-zero exit status.
"""

# Exit statuses of every module (documented in README.md).
EXIT_OK = 0
EXIT_FAILURE = 1      # the command ran and failed: server down, credentials refused, ...
EXIT_USAGE = 2        # unknown command or bad command-line arguments
EXIT_BAD_INPUT = 3    # stdin is not a document the command can use
EXIT_INTERNAL = 70    # a defect in the module (EX_SOFTWARE); the traceback is in the log


class MgrNotifyError(Exception):
    """Base class: a failure with a readable message, an error type and the object it concerns."""

    error_type = "error"
    exit_status = EXIT_FAILURE

    def __init__(self, message, error_type=None, obj=None, value=None):
        super().__init__(message)
        self.message = message
        if error_type:
            self.error_type = error_type
        self.object = obj
        self.value = value

    def __str__(self):
        return self.message


class UsageError(MgrNotifyError):
    """The command line is wrong: unknown command, missing or bad argument."""

    error_type = "usage"
    exit_status = EXIT_USAGE


class InputError(MgrNotifyError):
    """Stdin (or a notification file) is not a usable XML document."""

    error_type = "xml"
    exit_status = EXIT_BAD_INPUT


class ConfigError(MgrNotifyError):
    """A gateway setting or a line of billmgr.conf is missing or wrong."""

    error_type = "value"


class ConnectError(MgrNotifyError):
    """A server cannot be reached, refused the credentials, or failed TLS."""

    error_type = "connect"


class DeliveryError(MgrNotifyError):
    """The service was reached but refused or failed to accept the message."""

    error_type = "send"


class PartialFailure(DeliveryError):
    """Part of a command's work failed and the rest was done: one sentence naming each failure, then what went through.

    [ours] The rule for every command that does many independent things (README, "When part of the work fails"):
    one failure never stops the rest, and the exit status tells what the answer cannot. ``process`` records each
    failure in its task's ``err_info`` and ``outgoing_batch`` in its message's ``<result status="error">``, where
    their callers look: they exit 0 once every task or message has its outcome. ``getmessage`` answers an empty
    document, which has no room for one: any failure (a gateway of ``--gate all``, a message that could not be
    filed) makes it exit 1 with this error.
    """

    def __init__(self, failures, done, obj=None):
        failures = list(failures)
        counted = "" if len(failures) == 1 else "%d failures: " % len(failures)
        super().__init__("%s%s; what went through: %s" % (counted, "; ".join(failures), done), obj=obj)
        self.failures = failures


class DatabaseError(MgrNotifyError):
    """BILLmanager's database cannot be reached or rejected a statement."""

    error_type = "db"
    #: True when the server was reached and refused the statement itself (bad value, a trigger), as opposed
    #: to a connection, login or client failure: only such a refusal can be set aside while the rest goes on
    statement_refused = False


class MgrctlError(MgrNotifyError):
    """``sbin/mgrctl`` failed or returned an error document."""

    error_type = "mgrctl"


class TemplateError(MgrNotifyError):
    """A notification template cannot be rendered."""

    error_type = "template"
