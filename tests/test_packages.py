"""The OS packages (rpm/, debian/): built from a clean copy of the repository, checked, installed, run, removed.

- Built once per run with rpm/build and debian/build (what `make rpm` / `make deb` run) in a temporary copy
  holding the repository's files as a checkout would (tracked and new, nothing git ignores).
- Checked without root: names, versions, dependencies, lintian, every file of the repository's
  /usr/local/mgr5 part in exactly one package, each .rpm holding what its .deb holds.
- As root: the .debs installed on this machine with apt, run from /usr/local/mgr5, verified and purged;
  the .rpms unpacked into a folder and run at their real path in a private mount namespace; the
  maintainer scripts of both run beside a stand-in BILLmanager (tests/stand-ins/mgrctl).

The apt tests change this machine's /usr/local/mgr5: they refuse to run beside a real BILLmanager or
installed billmanager-plugin-* packages, and take a lock so that two test runs do not interleave.
"""

import contextlib
import fcntl
import grp
import io
import json
import os
import pwd
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET

import pytest

import sandbox as sandboxlib
from epochta_server import Account, EpochtaServer
from httpsms_servers import SmsRuServer
from max_server import MaxServer
from mgrnotify import __version__

REPO = sandboxlib.REPO
MGR5 = "/usr/local/mgr5"
LIBRARY = "billmanager-plugin-mgrnotify"
PLUGINS = ("billmanager-plugin-ntjabber", "billmanager-plugin-ntmax", "billmanager-plugin-gwepochta",
           "billmanager-plugin-gwhttpsms", "billmanager-plugin-gwmail")
PACKAGES = (LIBRARY,) + PLUGINS
# Each module with what its `--command features` names: a gateway's notify module, a type's contact column.
MODULES = {
    "notify/ntjabber": ("contact_type", "jabber"),
    "gate/gwjabber": ("notify_module", "ntjabber"),
    "notify/ntmax": ("contact_type", "max"),
    "gate/gwmax": ("notify_module", "ntmax"),
    "gate/gwepochta": ("notify_module", "ntsms"),
    "gate/gwhttpsms": ("notify_module", "ntsms"),
    "gate/gwmail": ("notify_module", "ntemail"),
}
# The repository's folders that are the /usr/local/mgr5 tree: every file in them belongs in a package.
MGR5_FOLDERS = ("gate", "notify", "etc", "skins", "lib")
LIBRARY_FOLDER = "lib/python/mgrnotify"
MGRCTL_STAND_IN = os.path.join(REPO, "tests", "stand-ins", "mgrctl")
RELOAD = {"options": {"-m": "billmgr", "-R": ""}, "func": "", "params": {}}   # as ISPsystem's packages restart it
# The EJS engine the library ships for node (ejs_render.js loads it), and the package whose templates need node.
EJS_FILES = tuple(LIBRARY_FOLDER + "/" + name for name in (
    "ejs_render.js", "node_modules/ejs/LICENSE", "node_modules/ejs/package.json", "node_modules/ejs/lib/ejs.js",
    "node_modules/ejs/lib/utils.js"))
NEEDS_NODE = ("billmanager-plugin-ntjabber", "billmanager-plugin-ntmax")   # the notification types: EJS templates
BUILD_TOOLS = ("rpmbuild", "dpkg-buildpackage", "dh", "git")
HOST_LOCK = os.path.join(tempfile.gettempdir(), "billmanager-plugin-packages-test.lock")
LOCK_WAIT = 600   # seconds to wait for another run of these tests to finish with this machine's packages
EPOCHTA_PASSWORD = "packaged-Ep0chta pw&<x>"
SMSRU_API_KEY = "packaged-SMSru-9F3C2A71-5B6D"
MAX_TOKEN = "packaged-max-bot-token-7Hq2"


def run(argv, **options):
    """Run a command; its CompletedProcess with text stdout and stderr."""
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, **options)


def need(*tools, root=False):
    """Skip the test, saying why, unless every tool is on PATH (and, with root=True, we are root)."""
    if root and os.geteuid() != 0:
        pytest.skip("needs root (apt-get, dpkg, rpm --root, unshare); CI runs the tests as root")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip("needs %s on PATH (.ci/deps installs rpm, debhelper, lintian)" % ", ".join(missing))


def clean_copy(dest):
    """Copy the repository's files as a checkout holds them (tracked and new, none ignored) into ``dest``."""
    if not os.path.exists(os.path.join(REPO, ".git")):   # a folder, or a file in a git worktree
        pytest.skip("%s is not a git checkout: which of its files a clean checkout holds is unknown" % REPO)
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO)
    if listed.returncode != 0:
        pytest.fail("git ls-files in %s failed: %s" % (REPO, listed.stderr))
    for name in sorted(set(listed.stdout.split("\0")) - {""}):
        source = os.path.join(REPO, name)
        if not os.path.lexists(source):   # deleted in the working tree, not yet in git
            continue
        os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
        shutil.copy2(source, os.path.join(dest, name), follow_symlinks=False)
    return dest


def deb_field(deb, field):
    """A control field of a .deb (``dpkg-deb -f``)."""
    return run(["dpkg-deb", "-f", deb, field], check=True).stdout.strip()


def rpm_query(rpm, *options):
    """What ``rpm -qp OPTIONS`` says of a .rpm file."""
    return run(["rpm", "-qp"] + list(options) + [rpm], check=True).stdout


def build(tree, script):
    """Run rpm/build or debian/build in ``tree``; fail the test with its output if it fails."""
    done = run([os.path.join(tree, script)], cwd=tree)
    if done.returncode != 0:
        pytest.fail("%s failed (exit %d):\n%s" % (script, done.returncode, (done.stdout + done.stderr)[-4000:]))


class Packages:
    """The packages one build made: ``deb`` and ``rpm`` map package name -> file."""

    def __init__(self, tree):
        self.tree = tree
        self.deb = {deb_field(f, "Package"): f for f in self._files("deb", ".deb")}
        self.rpm = {rpm_query(f, "--qf", "%{NAME}"): f for f in self._files("rpm", ".rpm")}
        self.changes = self._files("deb", ".changes")

    def _files(self, kind, suffix):
        folder = os.path.join(self.tree, "build", kind)
        return [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.endswith(suffix)]


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """rpm/build and debian/build, once, in a clean copy of the repository."""
    need(*BUILD_TOOLS)
    tree = clean_copy(str(tmp_path_factory.mktemp("checkout")))
    for script in ("rpm/build", "debian/build"):
        build(tree, script)
    return Packages(tree)


# --- listings: {path below /usr/local/mgr5: (mode as ls shows it, owner/group)} ----------------------------

def mgr5_in(root):
    """Where /usr/local/mgr5 is in the folder ``root`` that stands for /."""
    return os.path.join(root, MGR5.lstrip("/"))


def below_mgr5(path):
    """``gate/gwx`` for ``/usr/local/mgr5/gate/gwx`` or ``./usr/local/mgr5/gate/gwx/``; None outside MGR5."""
    path = "/" + path.lstrip("./").rstrip("/")
    return path[len(MGR5) + 1:] if path.startswith(MGR5 + "/") else None


def deb_listing(deb):
    """What the .deb's payload puts below /usr/local/mgr5 (the archive `dpkg-deb -c` lists)."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE, check=True).stdout
    listing = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive:
            path = below_mgr5(member.name)
            if path is not None:
                kind = stat.S_IFDIR if member.isdir() else stat.S_IFLNK if member.issym() else stat.S_IFREG
                listing[path] = (stat.filemode(kind | member.mode), "%s/%s" % (member.uname, member.gname))
    return listing


def rpm_listing(rpm):
    """What the .rpm's header says its payload puts below /usr/local/mgr5."""
    files = rpm_query(rpm, "--qf", "[%{FILEMODES:perms} %{FILEUSERNAME}/%{FILEGROUPNAME} %{FILENAMES}\n]")
    listing = {}
    for line in files.splitlines():
        mode, owner, name = line.split(" ", 2)
        if below_mgr5(name) is not None:
            listing[below_mgr5(name)] = (mode, owner)
    return listing


def tree_listing(root):
    """What is below ``root``/usr/local/mgr5 on disk."""
    top = mgr5_in(root)
    listing = {}
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            owner = "%s/%s" % (pwd.getpwuid(info.st_uid).pw_name, grp.getgrgid(info.st_gid).gr_name)
            listing[os.path.relpath(path, top)] = (stat.filemode(info.st_mode), owner)
    return listing


def all_debs_listing(packages):
    """What all the .debs together put below /usr/local/mgr5."""
    listing = {}
    for deb in packages.deb.values():
        listing.update(deb_listing(deb))
    return listing


def repository_files(tree):
    """The files of the checkout's /usr/local/mgr5 part, as paths below MGR5."""
    found = set()
    for top in MGR5_FOLDERS:
        for folder, dirs, files in os.walk(os.path.join(tree, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            found.update(os.path.relpath(os.path.join(folder, f), tree) for f in files)
    return found


# --- without root: what the builds made ----------------------------------------------------------------------

def test_both_builds_make_the_six_packages(packages):
    assert sorted(packages.deb) == sorted(PACKAGES)
    assert sorted(packages.rpm) == sorted(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_version_is_mgrnotify_version(packages, package):
    assert deb_field(packages.deb[package], "Version") == __version__
    assert rpm_query(packages.rpm[package], "--qf", "%{VERSION}") == __version__


@pytest.mark.parametrize("package", PLUGINS)
def test_plugin_depends_on_the_library_of_its_own_version(packages, package):
    depends = [d.strip() for d in deb_field(packages.deb[package], "Depends").split(",")]
    assert "%s (= %s)" % (LIBRARY, __version__) in depends
    assert "python3" in depends   # lintian: a package of Python scripts depends on python3 itself
    release = rpm_query(packages.rpm[LIBRARY], "--qf", "%{RELEASE}")
    requires = [r.strip() for r in rpm_query(packages.rpm[package], "-R").splitlines()]
    assert "%s = %s-%s" % (LIBRARY, __version__, release) in requires


def test_library_depends_on_python3_lxml_defusedxml(packages):
    wanted = {"python3", "python3-lxml", "python3-defusedxml"}
    assert wanted <= {d.strip() for d in deb_field(packages.deb[LIBRARY], "Depends").split(",")}
    assert wanted <= {r.strip() for r in rpm_query(packages.rpm[LIBRARY], "-R").splitlines()}


def test_the_library_ships_the_ejs_engine(packages):
    for listing in (deb_listing(packages.deb[LIBRARY]), rpm_listing(packages.rpm[LIBRARY])):
        assert [path for path in EJS_FILES if listing.get(path, ("",))[0] != "-rw-r--r--"] == []


@pytest.mark.parametrize("package", PACKAGES)
def test_only_the_packages_with_ejs_templates_need_node(packages, package):
    depends = {d.strip() for d in deb_field(packages.deb[package], "Depends").split(",")}
    requires = {r.strip() for r in rpm_query(packages.rpm[package], "-R").splitlines()}
    assert ("nodejs" in depends, "nodejs" in requires) == ((True, True) if package in NEEDS_NODE else (False, False))


def test_version_is_read_from_mgrnotify_init_at_build_time(tmp_path):
    """Change __version__ in a copy: both builds follow it, with nothing else edited."""
    need(*BUILD_TOOLS)
    tree = clean_copy(str(tmp_path))
    init = os.path.join(tree, LIBRARY_FOLDER, "__init__.py")
    with open(init, encoding="utf-8") as f:
        text = f.read()
    assert '__version__ = "%s"' % __version__ in text
    with open(init, "w", encoding="utf-8") as f:
        f.write(text.replace('__version__ = "%s"' % __version__, '__version__ = "9.8.7"'))
    for script in ("rpm/build", "debian/build"):
        build(tree, script)
    rebuilt = Packages(tree)
    assert {deb_field(f, "Version") for f in rebuilt.deb.values()} == {"9.8.7"}
    assert {rpm_query(f, "--qf", "%{VERSION}") for f in rebuilt.rpm.values()} == {"9.8.7"}


@pytest.mark.parametrize("script, listing", [("rpm/build", "rpm/billmanager-plugins.spec"),
                                             ("debian/build", "debian/*.install")])
def test_build_fails_naming_a_missing_listed_file(tmp_path, script, listing):
    need("git")
    tree = clean_copy(str(tmp_path))
    os.remove(os.path.join(tree, "gate", "gwepochta"))
    done = run([os.path.join(tree, script)], cwd=tree)
    assert done.returncode != 0
    assert "gate/gwepochta is listed in %s but does not exist" % listing in done.stderr
    assert not os.path.exists(os.path.join(tree, "build")), "nothing is built when a file is missing"


def test_lintian_reports_nothing_beyond_the_overrides(packages):
    need("lintian")
    done = run(["lintian", "--fail-on", "error,warning"] + packages.changes)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [line for line in done.stdout.splitlines() if line[:2] in ("E:", "W:")], done.stdout


def test_lintian_overrides_only_concern_usr_local():
    """Each package's overrides concern its files in /usr/local/mgr5 only, and each says why in a comment."""
    folder = os.path.join(REPO, "debian")
    overrides = [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".lintian-overrides")]
    assert {"%s.lintian-overrides" % p for p in PACKAGES} <= set(map(os.path.basename, overrides))
    for path in overrides:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        assert text.startswith("# ") and lines, (path, text)
        assert all(line.endswith("]") and " [usr/local/mgr5/" in line for line in lines), (path, lines)


def test_every_repository_file_is_in_exactly_one_package(packages):
    owners = {}
    for package, deb in packages.deb.items():
        for path, (mode, _) in deb_listing(deb).items():
            if not mode.startswith("d"):
                owners.setdefault(path, []).append(package)
    assert {path: names for path, names in owners.items() if len(names) > 1} == {}
    assert sorted(repository_files(packages.tree) - set(owners)) == [], "in the repository, in no package"
    assert sorted(set(owners) - repository_files(packages.tree)) == [], "in a package, not in the repository"


def test_packaged_modules_are_the_known_ones(packages):
    modules = {p for p in all_debs_listing(packages) if p.split("/")[0] in ("gate", "notify") and "/" in p}
    assert modules == set(MODULES)


@pytest.mark.parametrize("package", PACKAGES)
def test_each_rpm_holds_what_its_deb_holds(packages, package):
    """The same files and folders below /usr/local/mgr5, with the same modes and owners."""
    assert rpm_listing(packages.rpm[package]) == deb_listing(packages.deb[package])


@pytest.mark.parametrize("package", PACKAGES)
def test_rpm_payload_is_gzip(packages, package):
    assert rpm_query(packages.rpm[package], "--qf", "%{PAYLOADCOMPRESSOR}") == "gzip"


# --- as root, in a private mount namespace: /usr/local is a folder of ours -------------------------------------

def in_namespace(root, argv, cwd="/", input=None):
    """Run ``argv`` with ``root``/usr/local mounted on /usr/local, in a mount namespace of its own."""
    script = 'mount --make-rprivate / && mount --bind "$1/usr/local" /usr/local && cd "$2" && shift 2 && exec "$@"'
    return run(["unshare", "-m", "sh", "-c", script, "sh", root, cwd] + list(argv), input=input, env=module_env())


def module_env():
    """The environment of a module run: nothing pointing at the repository or a sandbox."""
    env = {k: v for k, v in os.environ.items() if k not in ("MGR5_ROOT", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    return env


def assert_features(done, module):
    """``done`` is a module's answer to --command features, naming what MODULES says."""
    assert done.returncode == 0, done.stdout + done.stderr
    root = ET.fromstring(done.stdout)
    tag, value = MODULES[module]
    assert root.tag == "doc" and root.find("features") is not None, done.stdout
    assert root.findtext(tag) == value, done.stdout


def mgrctl_calls(root):
    """The calls the stand-in mgrctl in ``root``'s MGR5 recorded."""
    path = os.path.join(mgr5_in(root), "var", "mgrctl-calls.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def add_billmanager(root):
    """Make ``root`` look like a BILLmanager install: a stand-in sbin/mgrctl, var/ and an XML file of its own.
    Returns what it added below MGR5, apart from var/ (where the stand-in records its calls)."""
    for folder in ("sbin", "var", "etc/xml"):
        os.makedirs(os.path.join(mgr5_in(root), folder), exist_ok=True)
    shutil.copy(MGRCTL_STAND_IN, os.path.join(mgr5_in(root), "sbin", "mgrctl"))
    with open(os.path.join(mgr5_in(root), "etc", "xml", "billmgr_mod_billmanager_own.xml"), "w") as f:
        f.write("<mgrdata/>\n")
    return {"sbin", "sbin/mgrctl", "etc", "etc/xml", "etc/xml/billmgr_mod_billmanager_own.xml"}


def python_cache_tag():
    """The bytecode tag of /usr/bin/python3, the modules' interpreter (cpython-311)."""
    return run(["/usr/bin/python3", "-c", "import sys; print(sys.implementation.cache_tag)"], check=True).stdout.strip()


def assert_library_compiled(library):
    """Bytecode for /usr/bin/python3 beside every module of the library folder ``library``."""
    tag = python_cache_tag()
    sources = [n[:-3] for n in os.listdir(library) if n.endswith(".py")]
    missing = [s for s in sources if not os.path.exists(os.path.join(library, "__pycache__", "%s.%s.pyc" % (s, tag)))]
    assert sources and missing == []


def pycache_folders(top):
    """Every __pycache__ folder below ``top``."""
    return [folder for folder, _, _ in os.walk(top) if os.path.basename(folder) == "__pycache__"]


class RpmRoot:
    """The .rpm packages installed into a folder with `rpm --root`, their scriptlets run as rpm would."""

    def __init__(self, folder, packages):
        self.root = folder
        self.packages = packages
        done = run(["rpm", "--root", folder, "--dbpath", "/var/lib/rpm", "-i", "--nodeps", "--noscripts"]
                   + [packages.rpm[p] for p in PACKAGES])
        assert done.returncode == 0, done.stderr
        self.payload = tree_listing(folder)
        self.billmanager = add_billmanager(folder)

    def scriptlet(self, package, tag, argument):
        """Run one scriptlet (POSTIN, PREUN, POSTUN, POSTTRANS) of ``package`` as rpm would, if it has one."""
        body = rpm_query(self.packages.rpm[package], "--qf", "%%{%s}" % tag)
        if body == "(none)":
            return
        done = in_namespace(self.root, ["sh", "-c", body, package, str(argument)])
        assert done.returncode == 0, (package, tag, done.stderr)


@pytest.fixture(scope="module")
def rpm_root(packages, tmp_path_factory):
    """The .rpms unpacked into a folder beside a stand-in BILLmanager; install scriptlets run in rpm's order."""
    need("rpm", "unshare", root=True)
    installed = RpmRoot(str(tmp_path_factory.mktemp("rpm-root")), packages)
    for package in PACKAGES:
        installed.scriptlet(package, "POSTIN", 1)
    for package in PACKAGES:
        installed.scriptlet(package, "POSTTRANS", 0)
    return installed


def test_rpm_payloads_hold_the_debs_files_with_the_same_modes(packages, rpm_root):
    assert rpm_root.payload == all_debs_listing(packages)


def test_rpm_verify_is_clean(rpm_root):
    done = run(["rpm", "--root", rpm_root.root, "--dbpath", "/var/lib/rpm", "-Va", "--nodeps"])
    assert (done.returncode, done.stdout) == (0, "")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_unpacked_rpm_module_answers_features(rpm_root, module):
    assert_features(in_namespace(rpm_root.root, [os.path.join(MGR5, module), "--command", "features"], cwd=MGR5),
                    module)


def test_rpm_install_scriptlets_compile_the_library_and_reload_billmanager(rpm_root):
    assert_library_compiled(os.path.join(mgr5_in(rpm_root.root), LIBRARY_FOLDER))
    assert mgrctl_calls(rpm_root.root) == [RELOAD] * len(PLUGINS)


def test_rpm_erase_leaves_only_billmanagers_own_files(rpm_root):
    """Erase as rpm does (preun, files, postun): the bytecode goes, and every folder we own that is now empty.
    In an upgrade the old version's scriptlets run with 1 after the new one's %post: they change nothing."""
    for package in PACKAGES:
        rpm_root.scriptlet(package, "PREUN", 1)
        rpm_root.scriptlet(package, "POSTUN", 1)
    assert_library_compiled(os.path.join(mgr5_in(rpm_root.root), LIBRARY_FOLDER))
    assert mgrctl_calls(rpm_root.root) == [RELOAD] * len(PLUGINS)
    for package in PACKAGES:
        rpm_root.scriptlet(package, "PREUN", 0)
    done = run(["rpm", "--root", rpm_root.root, "--dbpath", "/var/lib/rpm", "-e", "--nodeps", "--noscripts"]
               + list(PACKAGES))
    assert done.returncode == 0, done.stderr
    for package in PACKAGES:
        rpm_root.scriptlet(package, "POSTUN", 0)
    assert mgrctl_calls(rpm_root.root) == [RELOAD] * (2 * len(PLUGINS))
    left = {path for path in tree_listing(rpm_root.root) if path != "var" and not path.startswith("var/")}
    assert left == rpm_root.billmanager   # var/: the logs of the module runs and the recorded mgrctl calls


def test_deb_maintainer_scripts_beside_billmanager(packages, tmp_path):
    """With BILLmanager present each plugin reloads it on install and on removal; the library's
    bytecode is compiled on install and gone on removal. dpkg's order: dependencies configured first."""
    need("dpkg-deb", "unshare", root=True)
    root, control = str(tmp_path / "root"), str(tmp_path / "control")
    for package in PACKAGES:
        subprocess.run(["dpkg-deb", "-x", packages.deb[package], root], check=True)
        os.makedirs(os.path.join(control, package))
        subprocess.run(["dpkg-deb", "-e", packages.deb[package], os.path.join(control, package)], check=True)
    add_billmanager(root)

    def maintainer_script(package, name, *args):
        path = os.path.join(control, package, name)
        if os.path.exists(path):
            done = in_namespace(root, [path] + list(args))
            assert done.returncode == 0, (package, name, done.stderr)

    for package in PACKAGES:
        maintainer_script(package, "postinst", "configure")
    assert_library_compiled(os.path.join(mgr5_in(root), LIBRARY_FOLDER))
    assert mgrctl_calls(root) == [RELOAD] * len(PLUGINS)
    for package in reversed(PACKAGES):
        maintainer_script(package, "prerm", "remove")
        maintainer_script(package, "postrm", "remove")
    assert pycache_folders(mgr5_in(root)) == []
    assert mgrctl_calls(root) == [RELOAD] * (2 * len(PLUGINS))
    for package in PACKAGES:
        maintainer_script(package, "postrm", "purge")
    assert mgrctl_calls(root) == [RELOAD] * (2 * len(PLUGINS)), "purge after remove reloads nothing more"


def test_a_failing_reload_never_fails_a_package_script(packages, tmp_path):
    """BILLmanager's restart failing (mgrctl exits 3) leaves every install and removal script of both formats
    succeeding: a package transaction is never stopped by it."""
    need("dpkg-deb", "rpm", "unshare", root=True)
    root = str(tmp_path / "root")
    add_billmanager(root)
    mgrctl = os.path.join(mgr5_in(root), "sbin", "mgrctl")
    with open(mgrctl, "w") as f:
        f.write("#!/bin/sh\necho \"$*\" >> \"$(dirname \"$0\")/../var/failed-reloads\"\n"
                "echo 'mgrctl: cannot connect to BILLmanager' >&2\nexit 3\n")
    ran = []
    for package in PLUGINS:
        control = str(tmp_path / "control" / package)
        os.makedirs(control)
        subprocess.run(["dpkg-deb", "-e", packages.deb[package], control], check=True)
        for script, argument in (("postinst", "configure"), ("postrm", "remove")):
            done = in_namespace(root, [os.path.join(control, script), argument])
            ran.append((package, script, done.returncode))
        for tag, argument in (("POSTTRANS", "0"), ("POSTUN", "0")):
            body = rpm_query(packages.rpm[package], "--qf", "%%{%s}" % tag)
            done = in_namespace(root, ["sh", "-c", body, package, argument])
            ran.append((package, tag, done.returncode))
    assert [r for r in ran if r[2] != 0] == []
    with open(os.path.join(mgr5_in(root), "var", "failed-reloads")) as f:
        assert f.read().splitlines() == ["-m billmgr -R"] * len(ran), "each script tried the restart"


# --- as root, on this machine: apt-get install, run, dpkg -V, dpkg -P -----------------------------------------

@contextlib.contextmanager
def host_lock():
    """Hold this machine's lock for the apt tests, waiting for another run to finish with them."""
    with open(HOST_LOCK, "w") as lock:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail("another test run held %s for %d s" % (HOST_LOCK, LOCK_WAIT))
                time.sleep(0.5)
        yield


def mgr5_contents():
    """Every path of this machine's /usr/local/mgr5, the folder itself included, as paths below /usr/local."""
    found = set()
    for folder, dirs, files in os.walk(MGR5):
        found.add(os.path.relpath(folder, "/usr/local"))
        found.update(os.path.relpath(os.path.join(folder, n), "/usr/local") for n in dirs + files)
    return found


def installed_packages():
    """Which of our packages dpkg knows as installed here (in any state but not-installed)."""
    done = run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n"] + list(PACKAGES))
    return [line.split()[0] for line in done.stdout.splitlines() if line.split()[1:] != ["not-installed"]]


class HostInstall:
    """The .debs installed on this machine; which modules ran (their logs are in var/)."""

    def __init__(self, before):
        self.before = before
        self.ran = set()

    def run(self, module, *args, input=None):
        """Run an installed module as BILLmanager does: from /usr/local/mgr5, XML on stdin."""
        self.ran.add(os.path.basename(module))
        return run([os.path.join(MGR5, module)] + list(args), cwd=MGR5, input=input, env=module_env(), timeout=120)

    def logs(self):
        """What the module runs may leave in this machine's /usr/local/mgr5: their logs in var/."""
        return {"mgr5", "mgr5/var"} | {"mgr5/var/%s.log" % name for name in self.ran}

    def remove_what_the_tests_left(self):
        """After the purge: remove whatever this machine's /usr/local/mgr5 did not hold before the install
        (the logs, and anything a failed purge test found), so that the next run starts from the same state."""
        for path in sorted(mgr5_contents() - self.before, reverse=True):   # a folder's files before the folder
            full = os.path.join("/usr/local", path)
            if os.path.isdir(full) and not os.path.islink(full):
                os.rmdir(full)
            else:
                os.remove(full)


@pytest.fixture(scope="module")
def apt_installed(packages):
    """The .debs installed here with apt-get (pulling python3-lxml and python3-defusedxml if missing)."""
    need("apt-get", "dpkg", root=True)
    with host_lock():
        if os.path.exists(os.path.join(MGR5, "sbin", "mgrctl")):
            pytest.skip("this machine runs BILLmanager (%s/sbin/mgrctl): the test would reload it and replace "
                        "its plugins" % MGR5)
        if installed_packages():
            pytest.skip("%s already installed here: the test would replace and purge them"
                        % ", ".join(installed_packages()))
        host = HostInstall(mgr5_contents())
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            done = run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=120"]
                       + [packages.deb[p] for p in PACKAGES], env=env)
            assert done.returncode == 0, done.stdout + done.stderr
            yield host
        finally:
            if installed_packages():
                run(["dpkg", "-P"] + list(PACKAGES))
            host.remove_what_the_tests_left()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_installed_module_answers_features(apt_installed, module):
    assert_features(apt_installed.run(module, "--command", "features"), module)


def test_installed_gwepochta_delivers_to_the_epochta_stand_in(apt_installed):
    sandboxlib.remember_secret(EPOCHTA_PASSWORD)
    with EpochtaServer([Account("hoster", EPOCHTA_PASSWORD)]) as server:
        request = sandboxlib.gateway_request(
            {"login": "hoster", "password": EPOCHTA_PASSWORD, "sender": "BILLmgr", "url": server.url,
             "timeout": "10"},
            "Your invoice is ready", user={"id": "5", "name": "client", "phone": "+380972920000"},
            project={"id": "1", "name": "Provider"},
            gateway={"id": "3", "name": "sms", "gateway_module": "gwepochta", "notify_module": "ntsms"})
        done = apt_installed.run("gate/gwepochta", "--command", "outgoing", input=request)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(ET.fromstring(done.stdout)) == 0, done.stdout
    [sms] = server.documents()
    assert sms.findtext("message/text") == "Your invoice is ready"
    assert sms.findtext("numbers/number") == "380972920000"


def test_installed_gwhttpsms_delivers_to_the_smsru_stand_in(apt_installed):
    sandboxlib.remember_secret(SMSRU_API_KEY)
    with SmsRuServer(SMSRU_API_KEY) as server:
        request = sandboxlib.gateway_request(
            {"preset": "smsru", "url": server.origin, "api_key": SMSRU_API_KEY, "sender": "BILLmgr",
             "timeout": "10"},
            "Счёт готов & ждёт", user={"id": "5", "name": "client", "phone": "+7 (912) 000-00-00"},
            project={"id": "1", "name": "Provider"},
            gateway={"id": "4", "name": "smsru", "gateway_module": "gwhttpsms", "notify_module": "ntsms"})
        done = apt_installed.run("gate/gwhttpsms", "--command", "outgoing", input=request)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(ET.fromstring(done.stdout)) == 0, done.stdout
    assert server.sent == [("79120000000", "Счёт готов & ждёт", "BILLmgr")]


def test_installed_gwmax_delivers_to_the_max_stand_in(apt_installed):
    sandboxlib.remember_secret(MAX_TOKEN)
    with MaxServer(MAX_TOKEN) as server:
        request = sandboxlib.gateway_request(
            {"token": MAX_TOKEN, "url": server.origin, "timeout": "10"}, "Счёт готов & ждёт",
            gateway={"id": "5", "name": "max", "gateway_module": "gwmax", "notify_module": "ntmax"}, max="4100001")
        done = apt_installed.run("gate/gwmax", "--command", "outgoing", input=request)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(ET.fromstring(done.stdout)) == 0, done.stdout
    assert server.sent == [(4100001, "Счёт готов & ждёт", None)]


def test_installed_ejs_engine_renders_with_the_systems_node(apt_installed):
    """node, which the ntjabber package pulled in, loads the library's own copy of ejs by its path."""
    script = ("var ejs = require(process.argv[1]); "
              "process.stdout.write(ejs.render('<%= who %>: <%- n * 2 %>', {who: '<Bob>', n: 21}))")
    done = run(["node", "-e", script, os.path.join(MGR5, LIBRARY_FOLDER, "node_modules", "ejs")],
               cwd=MGR5, env=module_env(), timeout=60)
    assert (done.returncode, done.stdout) == (0, "&lt;Bob&gt;: 42"), done.stderr


def test_postinst_compiled_the_library_for_usr_bin_python3(apt_installed):
    assert_library_compiled(os.path.join(MGR5, LIBRARY_FOLDER))


def test_dpkg_verify_is_clean(apt_installed):
    done = run(["dpkg", "-V"] + list(PACKAGES))
    assert (done.returncode, done.stdout) == (0, "")


def test_purge_leaves_nothing_of_ours_in_mgr5(apt_installed):
    done = run(["dpkg", "-P"] + list(PACKAGES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert installed_packages() == []
    left = mgr5_contents() - apt_installed.before
    assert [path for path in left if "__pycache__" in path] == []
    assert left <= apt_installed.logs(), sorted(left - apt_installed.logs())
