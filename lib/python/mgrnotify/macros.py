"""Macro substitution in a rendered notification and its subject: ``{user.FIELD}``, ``{project.FIELD}``.

BILLmanager does the same with the user's data (``ReplaceMacros(text, user)``) but its syntax is not
public; an unknown field or any other ``{...}`` is left as it is, so a wrong guess shows in the text.
Macros run over the rendered text, data included, so a field whose name looks secret (password, token,
key, ...) is never substituted: a client's name reading ``{user.password}`` must not become one.
"""

import re

from .redact import is_secret

# [ours] brace syntax guessed from BILLmanager's phone-verification gateways ({phone}, {message}, {sender}).
MACRO = re.compile(r"\{(user|project)\.([A-Za-z0-9_]+)\}")


def replace_macros(text, user, project):
    """``text`` with each ``{user.FIELD}`` / ``{project.FIELD}`` replaced by that field of the dict.

    Substitution is one pass, so a value that itself contains a macro is inserted as it is.
    A field whose value is None becomes "".
    """
    rows = {"user": user or {}, "project": project or {}}

    def value(match):
        row = rows[match.group(1)]
        field = match.group(2)
        if field not in row or is_secret(field):
            return match.group(0)
        return "" if row[field] is None else str(row[field])

    return MACRO.sub(value, text)
