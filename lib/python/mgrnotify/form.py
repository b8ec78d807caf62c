"""The settings form as ``formtune`` receives it: filling choice lists and the defaults of empty fields."""


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
    """Give every field of ``defaults`` (name, value pairs) its value where the form has none yet."""
    from xml.etree.ElementTree import SubElement
    for name, value in defaults:
        field = form.find(name)
        if field is None:
            field = SubElement(form, name)
        if not (field.text or "").strip():
            field.text = value
