"""The command-line protocol every module speaks: our equivalent of ISPsystem's ``RUN_MODULE``.

BILLmanager runs ``gate/gwX --command NAME [--gate ID]`` with XML on stdin and reads XML on stdout.
``Module.main()`` parses the arguments, refuses an option the command does not take (``COMMAND_OPTIONS``),
calls the subclass's handler for the command and writes its document. Whatever goes wrong -- unknown command,
an option the command does not take, bad arguments, unreadable input, a failure the
module reports, a defect -- ends as an error document on stdout and a non-zero exit status
(see ``errors``); tracebacks go to the log only. The admin's own commands (``doctor``, ``preview``)
answer a person rather than BILLmanager: they write plain text lines and return ``Answered(status)``.
"""

import os
import sys

from . import errors, xmlio
from .config import Config, mgr5_root
from .log import open_log

MAX_INPUT_BYTES = 256 * 1024 * 1024   # a bound on stdin, far above any real notification
# Options that take no value (``doctor --connect``); given, they are True in the options.
FLAGS = {"connect"}


class Answered:
    """What a command returns when it has written its own answer (text for a person, or a streamed document):
    the exit status to end with."""

    def __init__(self, status):
        self.status = status


def is_id(text):
    """True for a database id as an option gives it (``--gate 12``, ``--task 1043``): ASCII digits only."""
    return bool(text) and all(c in "0123456789" for c in text)


def parse_arguments(argv):
    """``--name value`` / ``--name=value`` pairs and ``--flag`` (FLAGS) as a dict; ``command`` is required."""
    options = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--") or arg == "--":
            raise errors.UsageError("Unexpected argument '%s'; the modules take --command NAME [--gate ID]" % arg)
        name, equals, value = arg[2:].partition("=")
        if name in FLAGS:
            if equals:
                raise errors.UsageError("The option --%s takes no value" % name)
            value = True
        elif not equals:
            if not args or args[0].startswith("--"):
                raise errors.UsageError("The option --%s needs a value" % name)
            value = args.pop(0)
        if not name or name in options:
            raise errors.UsageError("The option --%s is empty or given twice" % name)
        options[name] = value
    if not options.get("command"):
        raise errors.UsageError("No command given; run with --command NAME (for example --command features)")
    return options


class Module:
    """Base of every module: holds the config and log, and maps ``--command NAME`` to ``command_NAME``."""

    #: the module's name, for its log file (var/NAME.log); by default the script's file name
    name = None
    #: The options each command takes besides ``--command``, each with how its value is written (None: a flag
    #: of FLAGS). Any other option, or one given to a command that does not take it, is a usage error (exit 2).
    COMMAND_OPTIONS = {}

    def __init__(self, config, log, options=None):
        self.config = config
        self.log = log
        self.options = options or {}

    def commands(self):
        """The command names this module answers."""
        return sorted(attr[len("command_"):] for attr in dir(self) if attr.startswith("command_"))

    def read_input(self, what="the input on stdin"):
        """Stdin as a parsed document (defused: no DTD, no entities)."""
        data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        if len(data) > MAX_INPUT_BYTES:
            raise errors.InputError("%s is larger than %d bytes" % (what.capitalize(), MAX_INPUT_BYTES))
        if self.log.enabled(9):
            self.log.debug("input: %s", data.decode("utf-8", "replace"))
        return xmlio.parse(data, what)

    def dispatch(self, command):
        """Run one command and return its output document (None, or ``Answered``, if the command wrote it
        itself)."""
        if command not in self.commands():
            raise errors.UsageError("%s has no command '%s'; it answers: %s"
                                    % (self.log.name, command, ", ".join(self.commands())), obj=command)
        self.check_options(command)
        return getattr(self, "command_" + command)()

    def check_options(self, command):
        """UsageError for an option ``command`` does not take (``COMMAND_OPTIONS``), naming what it takes."""
        takes = self.COMMAND_OPTIONS.get(command, {})
        unknown = sorted(name for name in self.options if name != "command" and name not in takes)
        if unknown:
            usage = ", ".join("--%s%s" % (name, "" if hint is None else " " + hint) for name, hint in sorted(takes.items()))
            raise errors.UsageError("%s --command %s does not take the option --%s; %s"
                                    % (self.log.name, command, unknown[0],
                                       "it takes only " + usage if usage else "it takes no option but --command"),
                                    obj=unknown[0])

    @classmethod
    def main(cls, argv=None):
        """Run the command line (``sys.argv`` by default) and exit with its status."""
        sys.exit(cls.run(sys.argv[1:] if argv is None else argv))

    @classmethod
    def run(cls, argv):
        """Run the command line ``argv``; write the output document; return the exit status."""
        script = sys.argv[0] or cls.__name__
        config = Config(mgr5_root(script))
        name = cls.name or os.path.basename(script)
        log = open_log(config, name)
        module = None
        try:
            options = parse_arguments(argv)
            module = cls(config, log, options)
            log.extinfo("--command %s%s", options["command"],
                        "".join(" --%s" % k if v is True else " --%s %s" % (k, v)
                                for k, v in sorted(options.items()) if k != "command"))
            output = module.dispatch(options["command"])
            status = errors.EXIT_OK
            if isinstance(output, Answered):   # written already
                output, status = None, output.status
        except errors.MgrNotifyError as e:
            log.error("%s", e.message)
            if e.object is None:
                e.object = name
            output, status = xmlio.error_document(e), e.exit_status
        except Exception as e:
            log.exception("Internal error in %s: %s", name, e)
            output = xmlio.error_document(errors.MgrNotifyError(
                "%s failed with an internal error (%s); the traceback is in %s"
                % (name, type(e).__name__, log.path), error_type="internal", obj=name))
            status = errors.EXIT_INTERNAL
        if log.enabled(9):
            log.debug("output: %s", output)
        try:
            if output:   # commands that stream their answer have written it already
                sys.stdout.buffer.write(output.encode("utf-8"))
            sys.stdout.flush()
        except OSError as e:
            log.error("Cannot write the answer to stdout: %s", e)
            status = status or errors.EXIT_FAILURE
        if module is not None:
            try:
                module.finish(status == errors.EXIT_OK)
            except Exception as e:   # the answer is out: a second document would corrupt it
                log.exception("After the answer was written: %s", e)
        return status

    def finish(self, answered):
        """Called once the answer is written and flushed; ``answered`` is True when the command succeeded.

        The place for what must happen only after BILLmanager has the answer (marking fetched mail read).
        """
