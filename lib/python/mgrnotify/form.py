"""The settings form as ``formtune`` receives it: filling choice lists and the defaults of empty fields.

A gateway declares its ``defaults`` once (setting name to value, as the form holds it) and its choice lists,
each with the default first; ``tune`` writes both into the form. The same ``defaults`` are what the gateway's
code assumes for an empty setting, and what README's table and the form's hints say (tests/test_defaults.py).
"""


def tune(form, choices, defaults):
    """Fill each select of ``choices`` (name to values) and give the empty fields their ``defaults``; the form."""
    for name, values in choices.items():
        set_choices(form, name, values)
    set_defaults(form, defaults)
    return form


def set_choices(form, name, values):
    """Make the select ``name`` offer ``values`` (replacing any list it had).

    [ours] ``<slist name=..><msg>value</msg></slist>``: the panel shows each value through the form's
    messages of the same name, as ISPsystem's own modules fill their selects.
    """
    from xml.etree.ElementTree import SubElement
    for old in form.findall("slist[@name='%s']" % name):
        form.remove(old)
    select = SubElement(form, "slist", name=name)
    for value in values:
        SubElement(select, "msg").text = value


def set_defaults(form, defaults):
    """Give every field of ``defaults`` (name to value) its value where the form has none yet.

    [ours] A guess (how the panel saves empty fields is not public): an unticked checkbox as ``off``, a select left
    alone as its first choice, so a new gateway's form must show each default. A value the form already holds
    (``off`` too) is kept. Should BILLmanager not pass an existing gateway's values to formtune, a saved ``off``
    would show as ``on``: the safe side.
    """
    from xml.etree.ElementTree import SubElement
    for name, value in defaults.items():
        field = form.find(name)
        if field is None:
            field = SubElement(form, name)
        if not (field.text or "").strip():
            field.text = value
