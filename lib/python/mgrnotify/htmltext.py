"""The readable plain text of an HTML mail body, for the text part of a multipart/alternative mail."""

from html.parser import HTMLParser


class _TextOfHTML(HTMLParser):
    """Collects the visible text: blocks on lines of their own, list items dashed, links followed by their URL."""

    BLOCKS = frozenset("p div br tr li h1 h2 h3 h4 h5 h6 table ul ol blockquote pre hr".split())
    HIDDEN = frozenset(["head", "script", "style", "title"])

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.hidden = 0
        self.link = None

    def handle_starttag(self, tag, attrs):
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n- " if tag == "li" else "\n")
        elif tag == "a":
            self.link = (dict(attrs).get("href") or "", len(self.parts))

    def handle_endtag(self, tag):
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")
        elif tag == "a" and self.link:
            href, start = self.link
            if href and not href.startswith("#") and href not in "".join(self.parts[start:]):
                self.parts.append(" <%s>" % href)
            self.link = None

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)

    def text(self):
        """The collected text: words of a line joined by one space, at most one empty line in a row."""
        lines = [" ".join(line.split()) for line in "".join(self.parts).split("\n")]
        out = []
        for line in lines:
            if line or (out and out[-1]):
                out.append(line)
        return "\n".join(out).strip() + "\n"


def html_to_text(html):
    """A plain-text rendering of ``html``."""
    parser = _TextOfHTML()
    parser.feed(html)
    parser.close()
    return parser.text()
