"""Start-up cost: ``--command features`` of every module, as a ratio to a bare ``python3 -c pass``.

Goal (issue 2): at most 1.3×, because BILLmanager asks every module for its features often.
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import timing  # noqa: E402

GOAL = 1.3


def modules():
    found = []
    for folder in ("gate", "notify"):
        found += sorted(os.path.join(folder, n) for n in os.listdir(os.path.join(timing.REPO, folder)))
    return found


def main():
    timing.compile_library()
    with tempfile.TemporaryDirectory() as root:
        # a minimal MGR5 root, so the run's log goes there and not into the checkout
        for folder in ("gate", "notify"):
            os.makedirs(os.path.join(root, folder))
        os.symlink(os.path.join(timing.REPO, "lib"), os.path.join(root, "lib"))
        print("| command | median | python3 -c pass | ratio | goal | |")
        print("| --- | --- | --- | --- | --- | --- |")
        for module in modules() or []:
            os.symlink(os.path.join(timing.REPO, module), os.path.join(root, module))
            value, base = timing.compare([os.path.join(root, module), "--command", "features"], runs=60, cwd=root)
            print(timing.row("%s --command features" % module, value, base, GOAL))


if __name__ == "__main__":
    main()
