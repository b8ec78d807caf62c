"""The signed yum/dnf and apt repositories `make repo` builds (publish/build): checked as files, then used.

- Built once per run: `make repo` in a clean copy of the repository, signed with a throwaway key, and again in a
  second copy whose __version__ is one step higher (the update an installed host should pick up).
- Without root: the layout, every signature against the exported key, no secret key anywhere, the unsigned build.
- As root, apt: in a private mount namespace where /usr/local and /var/lib/dpkg are copies of ours, so this
  machine's /usr/local/mgr5 and its dpkg database are never touched; apt's lists, cache and logs are folders of
  ours too, and the only source is the repository (`signed-by` the exported key).
- As root, dnf: `dnf --installroot` into a temporary root, with our repository and a small repository of stand-ins
  for what our packages require (python3, python3-lxml, python3-defusedxml, /bin/sh, /usr/bin/python3).
"""

import hashlib
import os
import shutil
import subprocess
import tempfile

import pytest

from mgrnotify import __version__
from test_packages import (BUILD_TOOLS, LIBRARY, LIBRARY_FOLDER, MGR5, PACKAGES, assert_features, clean_copy,
                           mgr5_in, need, run)

REPO_TOOLS = ("make", "createrepo_c", "rpmsign", "dpkg-scanpackages", "gpg", "gpgv")
PLUGIN = "billmanager-plugin-gwepochta"
KEY_FILE = "billmanager-plugins.asc"
SUITE = "dists/stable"
PACKAGES_INDEX = SUITE + "/main/binary-all/Packages"
NEXT_VERSION = __version__ + ".1"   # higher than __version__ for both dpkg and rpm
UNSIGNED_LINE = ("publish/build: MGRNOTIFY_SIGNING_KEY is not set: the packages, repomd.xml and Release in "
                 "build/repo/ are unsigned")


# --- throwaway keys and the two builds ---------------------------------------------------------------------------

class Key:
    """A throwaway signing key in a gpg home of its own (short path: gpg-agent's socket lives there)."""

    def __init__(self, name):
        self.home = tempfile.mkdtemp(prefix="mgrn-gpg-")
        done = self.gpg("--passphrase", "", "--quick-gen-key", "%s <%s@example.invalid>" % (name, name),
                        "rsa2048", "sign", "never")
        assert done.returncode == 0, done.stderr
        listing = self.gpg("--with-colons", "--list-secret-keys").stdout
        self.fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        self.public = os.path.join(self.home, "public.gpg")
        with open(self.public, "wb") as f:
            f.write(subprocess.run(["gpg", "--batch", "--export", self.fingerprint], env=self.env(),
                                   stdout=subprocess.PIPE, check=True).stdout)

    def env(self, **more):
        """The environment of a command that signs with this key."""
        return dict(os.environ, GNUPGHOME=self.home, GPG_TTY="", **more)

    def gpg(self, *args):
        return run(["gpg", "--batch", "--yes"] + list(args), env=self.env())

    def sign_rpm(self, path):
        done = run(["rpmsign", "--addsign", "--define", "__gpg %s" % shutil.which("gpg"),
                    "--define", "_gpg_name %s" % self.fingerprint, path], env=self.env())
        assert done.returncode == 0, done.stderr

    def close(self):
        run(["gpgconf", "--homedir", self.home, "--kill", "gpg-agent"])
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="module")
def keys():
    """The builder's key and another one."""
    need("gpg", "gpgconf")
    made = {}
    try:
        for name in ("builder", "other"):
            made[name] = Key("mgrnotify-test-" + name)
        yield made
    finally:
        for key in made.values():
            key.close()


def make_repo(tree, key):
    """`make repo` in ``tree`` signed with ``key``; its output."""
    done = run(["make", "-s", "repo"], cwd=tree, env=key.env(MGRNOTIFY_SIGNING_KEY=key.fingerprint))
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


def files_outside_build(tree):
    """Every file of ``tree`` outside build/, with its content's hash."""
    found = {}
    for folder, dirs, files in os.walk(tree):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) != os.path.join(tree, "build")]
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                found[os.path.relpath(os.path.join(folder, name), tree)] = hashlib.sha256(f.read()).hexdigest()
    return found


class Build:
    """One `make repo` in a clean copy: ``repo`` is its build/repo/."""

    def __init__(self, tree, key, version):
        self.tree = tree
        self.version = version
        self.before = files_outside_build(tree)
        self.output = make_repo(tree, key)
        self.repo = os.path.join(tree, "build", "repo")
        self.key_file = os.path.join(self.repo, KEY_FILE)

    def rpms(self):
        folder = os.path.join(self.repo, "rpm")
        return sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".rpm"))


@pytest.fixture(scope="module")
def builds(keys, tmp_path_factory):
    """`make repo` with the builder's key: ``builds["now"]`` of this checkout, ``builds["next"]`` of a copy one
    version higher."""
    need(*(BUILD_TOOLS + REPO_TOOLS))
    trees = {name: clean_copy(str(tmp_path_factory.mktemp("repo-" + name))) for name in ("now", "next")}
    init = os.path.join(trees["next"], LIBRARY_FOLDER, "__init__.py")
    with open(init, encoding="utf-8") as f:
        text = f.read()
    with open(init, "w", encoding="utf-8") as f:
        f.write(text.replace('__version__ = "%s"' % __version__, '__version__ = "%s"' % NEXT_VERSION))
    # One after the other, as releases are: apt keeps the lists it has when the new InRelease is older than theirs.
    now = Build(trees["now"], keys["builder"], __version__)
    return {"now": now, "next": Build(trees["next"], keys["builder"], NEXT_VERSION)}


def published(build, folder):
    """A copy of ``build``'s repositories in ``folder``, as a web server would hold them: readable by everyone
    (apt reads file: sources as its own user, _apt)."""
    if os.path.exists(folder):
        shutil.rmtree(folder)
    shutil.copytree(build.repo, folder)
    for parent, dirs, files in os.walk(folder):
        os.chmod(parent, 0o755)
        for name in files:
            os.chmod(os.path.join(parent, name), 0o644)
    return folder


def world_readable_folder():
    """A temporary folder every user may read (mkdtemp makes it 0700)."""
    folder = tempfile.mkdtemp(prefix="mgrn-repo-")
    os.chmod(folder, 0o755)
    return folder


# --- without root: what `make repo` made ------------------------------------------------------------------------

def test_make_repo_builds_both_repositories_and_the_public_key(builds):
    build = builds["now"]
    found = sorted(os.path.relpath(os.path.join(folder, name), build.repo)
                   for folder, _, files in os.walk(build.repo) for name in files)
    debs = ["deb/pool/main/%s_%s_all.deb" % (package, __version__) for package in PACKAGES]
    rpms = ["rpm/%s-%s-1.noarch.rpm" % (package, __version__) for package in PACKAGES]
    metadata = [name for name in found if name.startswith("rpm/repodata/")]
    assert found == sorted(debs + rpms + metadata + [
        KEY_FILE] + ["deb/" + name for name in (SUITE + "/InRelease", SUITE + "/Release", PACKAGES_INDEX,
                                               PACKAGES_INDEX + ".gz")])
    assert {"rpm/repodata/repomd.xml", "rpm/repodata/repomd.xml.asc"} <= set(metadata)
    assert "signed with %s" % keys_fingerprint(build) in build.output


def keys_fingerprint(build):
    """The fingerprint of the key exported beside ``build``'s repositories."""
    listing = run(["gpg", "--batch", "--with-colons", "--show-keys", build.key_file], check=True).stdout
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def test_the_exported_key_is_the_builders_public_key_only(builds, keys):
    build = builds["now"]
    assert keys_fingerprint(build) == keys["builder"].fingerprint
    packets = run(["gpg", "--batch", "--list-packets", build.key_file], check=True).stdout
    assert ":public key packet:" in packets and ":secret" not in packets
    for folder, _, files in os.walk(build.repo):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                assert b"PRIVATE KEY BLOCK" not in f.read(), name


def test_make_repo_writes_nothing_outside_build(builds):
    for build in builds.values():
        changed = files_outside_build(build.tree)
        if build.version != __version__:   # the copy whose version the test raised
            changed.pop(os.path.join(LIBRARY_FOLDER, "__init__.py"))
            build.before.pop(os.path.join(LIBRARY_FOLDER, "__init__.py"))
        assert changed == build.before


def test_every_rpm_is_signed_by_the_builders_key(builds, tmp_path):
    build = builds["now"]
    rpmdb = str(tmp_path / "rpmdb")
    os.makedirs(rpmdb)
    checked = run(["rpm", "--dbpath", rpmdb, "-K"] + build.rpms())
    assert checked.returncode != 0, "without the key, rpm cannot call the signatures good"
    run(["rpm", "--dbpath", rpmdb, "--import", build.key_file], check=True)
    checked = run(["rpm", "--dbpath", rpmdb, "-K"] + build.rpms())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert [line.split(": ", 1)[1] for line in checked.stdout.splitlines()] == ["digests signatures OK"] * 6
    key_id = keys_fingerprint(build)[-16:].lower()
    for rpm in build.rpms():
        signatures = run(["rpm", "-qp", "--qf", "%{RSAHEADER:pgpsig}|%{SIGPGP:pgpsig}", rpm], check=True).stdout
        assert [s.endswith("Key ID " + key_id) for s in signatures.split("|")] == [True, True], (rpm, signatures)


def test_the_package_files_are_those_make_rpm_and_make_deb_built(builds):
    """Signing changes the copies in build/repo/ only; each .deb is the very file make deb built."""
    build = builds["now"]
    for rpm in build.rpms():
        built = os.path.join(build.tree, "build", "rpm", os.path.basename(rpm))
        assert run(["rpm", "-qp", "--qf", "%{SIGPGP:pgpsig}", built], check=True).stdout == "(none)"
        assert run(["rpm", "-qp", "--qf", "%{SHA256HEADER}", built]).stdout == \
            run(["rpm", "-qp", "--qf", "%{SHA256HEADER}", rpm]).stdout
    for package in PACKAGES:
        name = "%s_%s_all.deb" % (package, __version__)
        with open(os.path.join(build.tree, "build", "deb", name), "rb") as built, \
                open(os.path.join(build.repo, "deb", "pool", "main", name), "rb") as pooled:
            assert built.read() == pooled.read()


def test_repomd_signature_is_good_for_the_exported_key(builds, keys):
    repodata = os.path.join(builds["now"].repo, "rpm", "repodata")
    done = run(["gpgv", "--keyring", keys["builder"].public,
                os.path.join(repodata, "repomd.xml.asc"), os.path.join(repodata, "repomd.xml")])
    assert done.returncode == 0, done.stderr
    done = run(["gpgv", "--keyring", keys["other"].public,
                os.path.join(repodata, "repomd.xml.asc"), os.path.join(repodata, "repomd.xml")])
    assert done.returncode != 0


def test_inrelease_is_release_signed_and_release_holds_the_indexes_sums(builds, keys):
    deb = os.path.join(builds["now"].repo, "deb")
    inrelease = os.path.join(deb, SUITE, "InRelease")
    done = subprocess.run(["gpgv", "--keyring", keys["builder"].public, "--output", "-", inrelease],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert done.returncode == 0, done.stderr
    with open(os.path.join(deb, SUITE, "Release"), "rb") as f:
        release = f.read()
    assert done.stdout == release
    fields = dict(line.split(": ", 1) for line in release.decode().splitlines() if ": " in line)
    assert (fields["Suite"], fields["Architectures"], fields["Components"]) == ("stable", "all", "main")
    sums = release.decode().split("SHA256:\n")[1].splitlines()
    for index in (PACKAGES_INDEX, PACKAGES_INDEX + ".gz"):
        with open(os.path.join(deb, index), "rb") as f:
            data = f.read()
        assert " %s %8d %s" % (hashlib.sha256(data).hexdigest(), len(data), index[len(SUITE) + 1:]) in sums
    assert run(["gpgv", "--keyring", keys["other"].public, inrelease]).returncode != 0


def test_packages_index_lists_each_deb_of_the_pool_with_its_sum(builds):
    deb = os.path.join(builds["now"].repo, "deb")
    with open(os.path.join(deb, PACKAGES_INDEX), encoding="utf-8") as f:
        stanzas = [dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
                   for stanza in f.read().strip().split("\n\n")]
    assert sorted(s["Package"] for s in stanzas) == sorted(PACKAGES)
    for stanza in stanzas:
        assert stanza["Version"] == __version__ and stanza["Architecture"] == "all"
        with open(os.path.join(deb, stanza["Filename"]), "rb") as f:
            assert stanza["SHA256"] == hashlib.sha256(f.read()).hexdigest()


def test_without_a_key_the_repositories_are_unsigned_and_one_line_says_so(builds, tmp_path):
    """publish/build alone, on the packages of the signed build, with no MGRNOTIFY_SIGNING_KEY."""
    tree = str(tmp_path)
    shutil.copytree(os.path.join(builds["now"].tree, "publish"), os.path.join(tree, "publish"))
    for kind in ("rpm", "deb"):
        shutil.copytree(os.path.join(builds["now"].tree, "build", kind), os.path.join(tree, "build", kind))
    env = {k: v for k, v in os.environ.items() if k != "MGRNOTIFY_SIGNING_KEY"}
    done = run([os.path.join(tree, "publish", "build")], cwd=tree, env=env)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line.startswith("publish/build:")] == [UNSIGNED_LINE]
    repo = os.path.join(tree, "build", "repo")
    for name in (KEY_FILE, "deb/%s/InRelease" % SUITE, "rpm/repodata/repomd.xml.asc"):
        assert not os.path.exists(os.path.join(repo, name)), name
    for name in ("deb/%s/Release" % SUITE, "deb/" + PACKAGES_INDEX, "rpm/repodata/repomd.xml"):
        assert os.path.exists(os.path.join(repo, name)), name
    rpms = [os.path.join(repo, "rpm", n) for n in os.listdir(os.path.join(repo, "rpm")) if n.endswith(".rpm")]
    assert len(rpms) == 6
    assert {run(["rpm", "-qp", "--qf", "%{RSAHEADER:pgpsig}", rpm]).stdout for rpm in rpms} == {"(none)"}


def test_a_key_name_with_no_secret_key_stops_the_build(builds, keys):
    tree = builds["now"].tree
    done = run([os.path.join(tree, "publish", "build")], cwd=tree,
               env=keys["builder"].env(MGRNOTIFY_SIGNING_KEY="nobody@example.invalid"))
    assert done.returncode == 1
    assert "MGRNOTIFY_SIGNING_KEY=nobody@example.invalid names no secret key" in done.stderr
    assert keys_fingerprint(builds["now"]) == keys["builder"].fingerprint, "the last build is left as it was"


# --- as root: apt, in a private mount namespace -----------------------------------------------------------------

class AptHost:
    """This machine's apt and dpkg with /usr/local and /var/lib/dpkg replaced, in a mount namespace, by folders of
    ours (an empty /usr/local, a copy of the dpkg database), and with apt's own state in folders of ours: the
    sources are only the repository, at ``www``, signed-by its exported key."""

    def __init__(self, base, www):
        self.base = base
        self.www = www
        os.makedirs(os.path.join(base, "usr", "local"))
        subprocess.run(["cp", "-a", "/var/lib/dpkg", os.path.join(base, "dpkg")], check=True)
        self.apt = os.path.join(base, "apt")
        for folder in ("lists/partial", "cache/archives/partial", "log", "sources.list.d"):
            os.makedirs(os.path.join(self.apt, folder))
        with open(os.path.join(self.apt, "sources.list"), "w") as f:
            f.write("deb [signed-by=%s] file:%s stable main\n" % (os.path.join(www, KEY_FILE), os.path.join(www, "deb")))

    def fresh_lists(self):
        """Forget what an earlier update fetched."""
        shutil.rmtree(os.path.join(self.apt, "lists"))
        os.makedirs(os.path.join(self.apt, "lists", "partial"))

    def run(self, *argv):
        """Run ``argv`` (apt-get, dpkg-query, a module) inside the namespace."""
        script = ('mount --make-rprivate / && mount --bind "$1/usr/local" /usr/local && '
                  'mount --bind "$1/dpkg" /var/lib/dpkg && cd / && shift && exec "$@"')
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"}
        return run(["unshare", "-m", "sh", "-c", script, "sh", self.base] + list(argv), env=env, timeout=300)

    def apt_get(self, *args):
        options = {
            "Dir::Etc::SourceList": os.path.join(self.apt, "sources.list"),
            "Dir::Etc::SourceParts": os.path.join(self.apt, "sources.list.d"),
            "Dir::State::Lists": os.path.join(self.apt, "lists"),
            "Dir::State::extended_states": os.path.join(self.apt, "extended_states"),
            "Dir::Cache": os.path.join(self.apt, "cache"),
            "Dir::Log": os.path.join(self.apt, "log"),
            "DPkg::Options::": "--log=%s" % os.path.join(self.apt, "log", "dpkg.log"),
        }
        argv = ["apt-get", "-q", "-y", "--no-install-recommends"]
        for name, value in options.items():
            argv += ["-o", "%s=%s" % (name, value)]
        return self.run(*(argv + list(args)))

    def installed(self):
        """Our packages dpkg knows as installed, with their versions."""
        done = self.run("dpkg-query", "-W", "-f", "${Package} ${Version} ${db:Status-Status}\n", *PACKAGES)
        return {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()
                if line.split()[2:] == ["installed"]}

    def candidate(self, package):
        """The version apt would install, from what the last update fetched ('(none)' when none)."""
        done = self.run("apt-cache", "-o", "Dir::State::Lists=%s" % os.path.join(self.apt, "lists"),
                        "-o", "Dir::Cache=%s" % os.path.join(self.apt, "cache"),
                        "-o", "Dir::Etc::SourceList=%s" % os.path.join(self.apt, "sources.list"),
                        "-o", "Dir::Etc::SourceParts=%s" % os.path.join(self.apt, "sources.list.d"),
                        "policy", package)
        lines = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith("Candidate:")]
        return lines[0].split(": ", 1)[1] if lines else "(none)"

    def mgr5_left(self):
        """What is left below our /usr/local."""
        top = os.path.join(self.base, "usr", "local")
        return sorted(os.path.relpath(os.path.join(folder, name), top)
                      for folder, dirs, files in os.walk(top) for name in dirs + files)


@pytest.fixture
def apt_host(builds):
    need("apt-get", "dpkg-query", "apt-cache", "unshare", root=True)
    base, www = world_readable_folder(), world_readable_folder()
    try:
        yield AptHost(base, www)
    finally:
        shutil.rmtree(base)
        shutil.rmtree(www)


def test_apt_installs_from_the_repository_upgrades_and_purges(apt_host, builds):
    published(builds["now"], apt_host.www)
    done = apt_host.apt_get("update")
    assert done.returncode == 0 and "W:" not in done.stdout + done.stderr, done.stdout + done.stderr
    done = apt_host.apt_get("install", PLUGIN)
    assert done.returncode == 0, done.stdout + done.stderr
    assert apt_host.installed() == {PLUGIN: __version__, LIBRARY: __version__}
    features = apt_host.run(os.path.join(MGR5, "gate", "gwepochta"), "--command", "features")
    assert_features(features, "gate/gwepochta")

    published(builds["next"], apt_host.www)
    done = apt_host.apt_get("update")
    assert done.returncode == 0, done.stdout + done.stderr
    done = apt_host.apt_get("upgrade")
    assert done.returncode == 0, done.stdout + done.stderr
    assert apt_host.installed() == {PLUGIN: NEXT_VERSION, LIBRARY: NEXT_VERSION}, done.stdout
    assert_features(apt_host.run(os.path.join(MGR5, "gate", "gwepochta"), "--command", "features"),
                    "gate/gwepochta")

    done = apt_host.apt_get("purge", LIBRARY, PLUGIN)
    assert done.returncode == 0, done.stdout + done.stderr
    assert apt_host.installed() == {}
    assert set(apt_host.mgr5_left()) <= {"mgr5", "mgr5/var", "mgr5/var/gwepochta.log"}   # the module's log stays


def tamper_packages_index(www):
    """Change one package's description in Packages (and Packages.gz), leaving the signed Release as it was."""
    index = os.path.join(www, "deb", PACKAGES_INDEX)
    with open(index, encoding="utf-8") as f:
        text = f.read()
    with open(index, "w", encoding="utf-8") as f:
        f.write(text.replace("Description: ", "Description: (tampered) ", 1))
    with open(index, "rb") as plain, open(index + ".gz", "wb") as packed:
        subprocess.run(["gzip", "-9n"], stdin=plain, stdout=packed, check=True)


def resign_release(www, key):
    """InRelease signed again, by ``key``."""
    suite = os.path.join(www, "deb", SUITE)
    done = key.gpg("--digest-algo", "SHA256", "--clearsign", "--output", os.path.join(suite, "InRelease"),
                   os.path.join(suite, "Release"))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("damage", ["tampered Packages", "Release signed by another key"])
def test_apt_refuses_a_damaged_repository(apt_host, builds, keys, damage):
    published(builds["now"], apt_host.www)
    if damage == "tampered Packages":
        tamper_packages_index(apt_host.www)
        reasons = ["Hash Sum mismatch"]
    else:
        resign_release(apt_host.www, keys["other"])
        reasons = ["NO_PUBKEY " + keys["other"].fingerprint[-16:], "is not signed"]
    done = apt_host.apt_get("update")
    assert done.returncode != 0, done.stdout + done.stderr
    assert [reason for reason in reasons if reason not in done.stdout + done.stderr] == [], done.stdout + done.stderr
    assert apt_host.candidate(PLUGIN) == "(none)"
    assert apt_host.apt_get("install", PLUGIN).returncode != 0
    assert apt_host.installed() == {}


# --- as root: dnf --installroot ----------------------------------------------------------------------------------

STAND_IN_SPEC = """\
Name: mgrnotify-test-base
Version: 1
Release: 1
Summary: Stand-ins for what the plugins require of an EL system
License: Public Domain
BuildArch: noarch
Provides: python3 python3-lxml python3-defusedxml
%description
Stand-ins for the tests of the yum repository: it provides what the plugins require.
%install
mkdir -p %{buildroot}/bin %{buildroot}/usr/bin
touch %{buildroot}/bin/sh %{buildroot}/usr/bin/python3
%files
/bin/sh
/usr/bin/python3
"""


@pytest.fixture(scope="module")
def base_repository(tmp_path_factory):
    """A yum repository of one unsigned package providing what ours require (python3, python3-lxml,
    python3-defusedxml, and the /bin/sh and /usr/bin/python3 of scriptlets and shebangs)."""
    need("dnf", "createrepo_c", "rpmbuild", root=True)
    work = tmp_path_factory.mktemp("stand-in-base")
    spec = work / "base.spec"
    spec.write_text(STAND_IN_SPEC)
    repo = work / "repo"
    done = run(["rpmbuild", "-bb", "--quiet", "--define", "_topdir %s" % (work / "top"),
                "--define", "_rpmdir %s" % repo, "--define", "_build_name_fmt %%{NAME}.rpm", str(spec)])
    assert done.returncode == 0, done.stderr
    run(["createrepo_c", "--quiet", str(repo)], check=True)
    return str(repo)


class DnfRoot:
    """A temporary root for `dnf --installroot`, with its own configuration: our repository at ``rpm_repo``
    (gpgcheck, repo_gpgcheck, gpgkey as the README tells admins) and the stand-in base."""

    def __init__(self, folder, base_repository):
        self.root = os.path.join(folder, "root")
        self.config = os.path.join(folder, "dnf.conf")
        self.reposdir = os.path.join(folder, "repos.d")
        self.base_repository = base_repository
        os.makedirs(self.root)
        os.makedirs(self.reposdir)

    def use(self, rpm_repo, key_file):
        with open(self.config, "w") as f:
            f.write("[main]\nskip_if_unavailable=False\n\n"
                    "[billmanager-plugins]\nname=BILLmanager plugins\nbaseurl=file://%s\nenabled=1\n"
                    "gpgcheck=1\nrepo_gpgcheck=1\ngpgkey=file://%s\n\n"
                    "[stand-in-base]\nname=stand-ins\nbaseurl=file://%s\nenabled=1\ngpgcheck=0\n"
                    % (rpm_repo, key_file, self.base_repository))

    def dnf(self, *args):
        return run(["dnf", "-y", "--config", self.config, "--installroot", self.root, "--releasever", "8",
                    "--noplugins", "--setopt=reposdir=%s" % self.reposdir, "--setopt=tsflags=noscripts"]
                   + list(args),
                   timeout=300)

    def installed(self):
        """Our packages in the root's rpm database, with their versions."""
        done = run(["rpm", "--root", self.root, "-q", "--qf", "%{NAME} %{VERSION}\n"] + list(PACKAGES))
        return dict(line.split() for line in done.stdout.splitlines() if "not installed" not in line)

    def close(self):
        """End the gpg-agents dnf started for repo_gpgcheck (one per repository's key ring)."""
        for folder, dirs, _ in os.walk(os.path.join(self.root, "var", "cache", "dnf")):
            if os.path.basename(folder) == "pubring":
                run(["gpgconf", "--homedir", folder, "--kill", "gpg-agent"])
                dirs[:] = []


@pytest.fixture
def dnf_root(base_repository, tmp_path):
    root = DnfRoot(str(tmp_path), base_repository)
    try:
        yield root
    finally:
        root.close()


def test_dnf_installs_from_the_repository_with_signatures_checked_then_upgrades(dnf_root, builds, keys):
    dnf_root.use(os.path.join(builds["now"].repo, "rpm"), builds["now"].key_file)
    done = dnf_root.dnf("install", PLUGIN)
    assert done.returncode == 0, done.stdout + done.stderr
    assert dnf_root.installed() == {PLUGIN: __version__, LIBRARY: __version__}
    assert os.path.exists(os.path.join(mgr5_in(dnf_root.root), "gate", "gwepochta"))
    imported = run(["rpm", "--root", dnf_root.root, "-q", "gpg-pubkey", "--qf", "%{VERSION}\n"]).stdout.split()
    assert imported == [keys["builder"].fingerprint[-8:].lower()], "dnf imported the repository's gpgkey"
    signed = run(["rpm", "--root", dnf_root.root, "-q", "--qf", "%{RSAHEADER:pgpsig}\n", PLUGIN, LIBRARY]).stdout
    assert [line.endswith("Key ID " + keys["builder"].fingerprint[-16:].lower()) for line in signed.splitlines()] \
        == [True, True], signed

    dnf_root.use(os.path.join(builds["next"].repo, "rpm"), builds["next"].key_file)
    done = dnf_root.dnf("upgrade")
    assert done.returncode == 0, done.stdout + done.stderr
    assert dnf_root.installed() == {PLUGIN: NEXT_VERSION, LIBRARY: NEXT_VERSION}


def resigned_rpm_repository(build, folder, package_key, metadata_key):
    """A copy of ``build``'s yum repository with the plugin's package signed by ``package_key`` and the
    metadata made anew and signed by ``metadata_key``."""
    rpm_repo = os.path.join(folder, "rpm")
    shutil.copytree(os.path.join(build.repo, "rpm"), rpm_repo)
    shutil.rmtree(os.path.join(rpm_repo, "repodata"))
    package_key.sign_rpm(os.path.join(rpm_repo, "%s-%s-1.noarch.rpm" % (PLUGIN, build.version)))
    run(["createrepo_c", "--quiet", "--general-compress-type=gz", rpm_repo], check=True)
    done = metadata_key.gpg("--detach-sign", "--armor", os.path.join(rpm_repo, "repodata", "repomd.xml"))
    assert done.returncode == 0, done.stderr
    return rpm_repo


@pytest.mark.parametrize("signed_by_other, reason", [
    ("package", "GPG check FAILED"), ("metadata", "repomd.xml GPG signature verification error")])
def test_dnf_refuses_what_another_key_signed(dnf_root, builds, keys, tmp_path, signed_by_other, reason):
    package_key = keys["other"] if signed_by_other == "package" else keys["builder"]
    metadata_key = keys["other"] if signed_by_other == "metadata" else keys["builder"]
    rpm_repo = resigned_rpm_repository(builds["now"], str(tmp_path / "www"), package_key, metadata_key)
    dnf_root.use(rpm_repo, builds["now"].key_file)
    done = dnf_root.dnf("install", PLUGIN)
    assert done.returncode != 0, done.stdout + done.stderr
    assert reason in done.stderr, done.stdout + done.stderr
    assert dnf_root.installed() == {}
