"""Every file the documentation and the code cite is in the repository, and every code location
docs/CONTRACT.md gives for a decision exists.

A citation is a path-like word in README.md, docs/*.md, the library, the modules, the tests, the
benchmarks or the Makefile:

- a name ending in ``.md`` without a folder (``CONTRACT.md``): a document at the top of the repository
  or in ``docs/``;
- a path starting with a folder of the repository (``docs/``, ``lib/python/``, ``mgrnotify/``, which is
  short for ``lib/python/mgrnotify/``, ``gate/``, ``notify/``, ``etc/xml/``, ``etc/sql/``, ``skins/``,
  ``tests/``, ``bench/``, ``rpm/``, ``debian/``, ``.ci/``);
- a bare ``name.py`` or ``name.js``: a file of the library, the tests or the benchmarks.

Left out on purpose, because they are not files of this repository and cannot be checked here:
paths of a running installation (``var/…`` logs, locks and journals; ``etc/billmgr.conf``,
``etc/debug.conf``, ``etc/billmgr.DoNothing``, BILLmanager's own ``etc/scripts/``; ``sbin/mgrctl``;
anything absolute, such as ``/usr/local/mgr5/…`` or ``/etc/resolv.conf``), what ``make`` writes into
``build/``, files of other projects (``lib/ejs.js`` of github.com/mde/ejs), and placeholders
(``gate/gwX``, ``var/<module>.log``, ``billmgr_mod_*.xml``).
"""

import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _citing_files():
    """The files whose citations are checked, relative to the repository (this test's own examples excepted)."""
    patterns = ("README.md", "Makefile", "docs/*.md", "lib/python/mgrnotify/*.py", "lib/python/mgrnotify/*.js",
                "gate/*", "notify/*", "tests/*.py", "tests/*.sql", "tests/stand-ins/*", "bench/*.py")
    found = []
    for pattern in patterns:
        found += sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, pattern)) if os.path.isfile(p))
    return [path for path in found if path != os.path.join("tests", "test_docs.py")]


CITING = _citing_files()

# A path-like word: letters, digits and . _ - / plus the characters that mark a placeholder.
WORD = re.compile(r"[\w.\-/<>*{}%…]+")
# gate/gwX, var/<module>.log, billmgr_mod_*.xml, billmgr_mod_NAME.xml, %s.py, gate/gwXXX, file.py::test_name
PLACEHOLDER = re.compile(r"[<>*{}%…]|\.\.\.|(^|[/_])(gw|nt)[xX]+\b|(?<=[_/])(NAME|ID|X+)\b|XXX|^(file|name|module)\.")
# Folders of the repository, and what a citation starting with one means.
REPO_FOLDERS = {"docs": "docs", "lib/python": "lib/python", "mgrnotify": "lib/python/mgrnotify", "gate": "gate",
                "notify": "notify", "etc/xml": "etc/xml", "etc/sql": "etc/sql", "skins": "skins", "tests": "tests",
                "bench": "bench", "rpm": "rpm", "debian": "debian", ".ci": ".ci"}
# Written by the build, not kept in the repository: debian/build makes debian/changelog from changelog.in.
GENERATED = ("debian/changelog",)
# Where a bare file name is looked for.
BARE_FOLDERS = ("", "docs", "lib/python/mgrnotify", "tests", "bench")


def prose(path, text):
    """What in ``text`` is written for a reader: all of a document, the comments and docstrings of code.

    String literals of code are left out: there a path is data (a sandbox's file, a message naming a path of
    the running installation), not a pointer for a reader.
    """
    if path.endswith(".md"):
        return text
    if path.endswith(".js"):
        return "\n".join(re.findall(r"//[^\n]*|/\*.*?\*/", text, re.S))
    if path.endswith(".sql"):
        return "\n".join(re.findall(r"--[^\n]*", text))
    if path.endswith(".py") or text.startswith("#!/usr/bin/python3"):
        return python_prose(text)
    return "\n".join(re.findall(r"#[^\n]*", text))   # the Makefile


def python_prose(text):
    """The comments and docstrings (strings standing alone as a statement) of Python source."""
    import io
    import tokenize
    parts = []
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    statement_start = True   # the next token opens a statement
    for i, token in enumerate(tokens):
        if token.type == tokenize.COMMENT:
            parts.append(token.string)
        elif token.type == tokenize.STRING and statement_start:
            following = tokens[i + 1].type if i + 1 < len(tokens) else tokenize.ENDMARKER
            if following in (tokenize.NEWLINE, tokenize.ENDMARKER, tokenize.COMMENT):
                parts.append(token.string)
        if token.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            statement_start = True
        elif token.type not in (tokenize.NL, tokenize.COMMENT):
            statement_start = False
    return "\n".join(parts)


def citations(text):
    """The repository paths ``text`` cites, as written (see the module docstring)."""
    found = []
    for match in WORD.finditer(text):
        word = match.group(0).rstrip(".-")
        start = match.start()
        if not word or PLACEHOLDER.search(word) or word.startswith("/") or "//" in word:
            continue
        if start > 0 and text[start - 1] in ":@\\":   # a URL's or an address's tail, an escape
            continue
        if "/" in word:
            if any(word == folder or word.startswith(folder + "/") for folder in REPO_FOLDERS):
                found.append(word)
        elif re.fullmatch(r"[\w\-]+\.md", word) or re.fullmatch(r"[a-z_0-9]+\.(py|js)", word):
            found.append(word)
    return found


def resolve(cited):
    """The repository path a citation names, or None when no such file or folder exists."""
    path = cited.rstrip("/")
    if "/" in path:
        for folder, real in sorted(REPO_FOLDERS.items(), key=lambda item: -len(item[0])):
            if path == folder or path.startswith(folder + "/"):
                path = real + path[len(folder):]
                break
        return path if path in GENERATED or os.path.exists(os.path.join(REPO, path)) else None
    for folder in BARE_FOLDERS:
        candidate = os.path.join(folder, path)
        if os.path.exists(os.path.join(REPO, candidate)):
            return candidate
    return None


def read(path):
    """The text of the repository file ``path``."""
    with open(os.path.join(REPO, path), encoding="utf-8", errors="replace") as f:
        return f.read()


@pytest.mark.parametrize("path", CITING)
def test_every_cited_file_exists(path):
    """What ``path`` cites (its prose: comments and docstrings of code) is in the repository."""
    missing = sorted({cited for cited in citations(prose(path, read(path))) if resolve(cited) is None})
    assert not missing, "%s cites files the repository does not have: %s" % (path, ", ".join(missing))


def test_the_readme_names_the_docs_folder():
    """A reader of the README on a clone finds docs/CONTRACT.md only if the README says docs/."""
    bare = sorted({cited for cited in citations(read("README.md"))
                   if "/" not in cited and (resolve(cited) or "").startswith("docs" + os.sep)})
    assert not bare, "README.md cites %s without docs/" % ", ".join(bare)


@pytest.mark.parametrize("text, expected", [
    ("see CONTRACT.md (docs)", ["CONTRACT.md"]),
    ("`docs/PROTOCOLS.md`, tests/sandbox.py and mgrnotify/queue.py.", ["docs/PROTOCOLS.md", "tests/sandbox.py",
                                                                      "mgrnotify/queue.py"]),
    ("var/ntjabber.log, etc/billmgr.conf, sbin/mgrctl, /usr/local/mgr5/gate/gwx, build/junit.xml", []),
    ("gate/gwX, var/<module>.log, etc/xml/billmgr_mod_*.xml, lib/python/<pkg>/", []),
    ("https://github.com/mde/ejs/blob/main/lib/ejs.js and the unchanged lib/ejs.js", []),
    ("the runner, ejs_render.js, and doctor.py", ["ejs_render.js", "doctor.py"]),
])
def test_citations_are_found_and_runtime_paths_left_out(text, expected):
    """Repository paths are found; runtime paths, URLs and placeholders are not citations."""
    assert citations(text) == expected


def test_a_missing_document_is_caught():
    """A citation resolves only to a file that is there; ``mgrnotify/`` is short for ``lib/python/mgrnotify/``."""
    assert resolve("CONTRACT-OLD.md") is None
    assert resolve("tests/no_such_test.py") is None
    assert resolve("mgrnotify/queue.py") == "lib/python/mgrnotify/queue.py"


# --- docs/CONTRACT.md: every code location it gives exists -------------------------------------------------

LOCATION = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")


def _code_files():
    """{module name: path} of the library's modules and the gateway and notification modules."""
    files = {}
    for path in glob.glob(os.path.join(REPO, "lib", "python", "mgrnotify", "*.py")):
        files[os.path.basename(path)[:-3]] = path
    for folder in ("gate", "notify"):
        for path in glob.glob(os.path.join(REPO, folder, "*")):
            files[os.path.basename(path)] = path
    return files


def _defines(source, name):
    """True when ``source`` defines ``name`` at some level: a def, a class, or an assignment to it."""
    return re.search(r"^\s*(?:def|class)\s+%s\b|^\s*(?:[A-Za-z_][A-Za-z0-9_]*\s*,\s*)*%s\s*(?:,[^=\n]*)?=(?!=)"
                     % (name, name), source, re.M) is not None


def locations(text):
    """The dotted code names (``queue.MAX_ERRORS``, ``TaskQueue.record``) in the last column of the table of
    decisions, the section of ``text`` headed "Every [ours] decision"."""
    names = []
    section = text.partition("\n## Every [ours] decision")[2].split("\n## ")[0]
    for line in section.splitlines():
        if line.startswith("|") and line.count("|") > 2:
            names += [m.group(1) for m in LOCATION.finditer(line.split("|")[-2])]
    return names


def unresolved(name, files):
    """Why ``name`` (module.NAME, module.Class.NAME or Class.NAME) names nothing in the code, or None."""
    first, rest = name.split(".", 1)
    parts = rest.split(".")
    if first in files:
        source = read(files[first])
        return None if all(_defines(source, part) for part in parts) else "%s has no %s" % (first, rest)
    for path in files.values():
        source = read(path)
        if re.search(r"^class\s+%s\b" % first, source, re.M) and all(_defines(source, p) for p in parts):
            return None
    return "no module or class %s with %s" % (first, rest)


def test_every_code_location_in_the_contract_exists():
    """Each name in the "where in the code" column is defined where it says (a def, class or assignment)."""
    path = os.path.join("docs", "CONTRACT.md")
    assert os.path.exists(os.path.join(REPO, path)), "docs/CONTRACT.md is missing"
    names = locations(read(path))
    assert len(names) >= 20, "docs/CONTRACT.md should give a code location for every [ours] decision"
    files = _code_files()
    problems = [p for p in (unresolved(n, files) for n in names) if p]
    assert not problems, "docs/CONTRACT.md names code that is not there: %s" % "; ".join(problems)


def test_every_ours_decision_in_the_code_is_in_the_contract():
    """Each library file or module with an [ours] decision appears among the contract's code locations."""
    files = _code_files()
    text = read(os.path.join("docs", "CONTRACT.md"))
    named = {n.split(".", 1)[0] for n in locations(text)}
    classes = {}
    for module, path in files.items():
        for cls in re.findall(r"^class\s+(\w+)", read(path), re.M):
            classes[cls] = module
    named |= {classes[n] for n in list(named) if n in classes}
    missing = sorted(m for m, p in files.items() if "[ours" in read(p) and m not in named)
    assert not missing, "files with [ours] decisions that docs/CONTRACT.md does not point at: %s" % ", ".join(missing)
