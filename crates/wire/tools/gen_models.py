#!/usr/bin/env python3
"""Generate sluice-wire's compact validation models from botocore's service models.

Usage (from the repository root):

    python3 crates/wire/tools/gen_models.py            # (re)write crates/wire/models/*.json
    python3 crates/wire/tools/gen_models.py --check    # exit 1 if a checked-in model is stale

Where the botocore models come from, in order of preference:
  --botocore-dir DIR   an unpacked botocore package (the directory that contains `data/`)
  --wheel FILE         a botocore wheel (.whl)
  (neither)            `pip download --no-deps botocore==<BOTOCORE_VERSION>` into a cache
                       directory ($SLUICE_BOTOCORE_CACHE or ~/.cache/sluice-botocore)

Only the standard library is used. The output is a pure function of the botocore input: keys
are sorted, numbers are written as botocore writes them, and each shape sits on its own line so
that diffs of a botocore upgrade stay readable. The output format is documented in
crates/wire/src/model.rs.
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import zipfile

BOTOCORE_VERSION = "1.44.5"
SERVICES = ["kms", "secretsmanager", "events", "firehose", "cloudtrail", "iam", "sts"]
HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.normpath(os.path.join(HERE, "..", "models"))

# Per shape type, the traits that validation needs. Everything else (documentation, http,
# errors, outputs, deprecation, ...) is dropped.
SHAPE_KEYS = {
    "structure": ["required", "sensitive", "union"],
    "list": ["min", "max", "sensitive"],
    "map": ["min", "max", "sensitive"],
    "string": ["min", "max", "pattern", "enum", "sensitive"],
    "blob": ["min", "max", "sensitive"],
    "integer": ["min", "max", "sensitive"],
    "long": ["min", "max", "sensitive"],
    "float": ["min", "max", "sensitive"],
    "double": ["min", "max", "sensitive"],
    "boolean": ["sensitive"],
    "timestamp": ["sensitive"],
}
MEMBER_KEYS = ["sensitive", "idempotencyToken"]

# Deliberate relaxations of AWS's constraints, by (service, shape): the service enforces the
# AWS rule itself when the operator's configuration asks for it (docs/specs/firehose.md).
OVERRIDES = {
    # Firehose endpoints: AWS accepts only https; sluice also accepts http when the operator's
    # outbound policy allows it (`outbound_allow_http`), and then checks the URL itself.
    ("firehose", "HttpEndpointUrl"): {"pattern": "https?://.*"},
}


class Source:
    """Reads `data/<service>/<version>/service-2.json[.gz]` from a directory or a wheel."""

    def __init__(self, botocore_dir=None, wheel=None):
        self.dir = botocore_dir
        self.zip = zipfile.ZipFile(wheel) if wheel else None

    def _names(self):
        if self.zip:
            return [n[len("botocore/"):] for n in self.zip.namelist() if n.startswith("botocore/data/")]
        out = []
        root = os.path.join(self.dir, "data")
        for dirpath, _, files in os.walk(root):
            for f in files:
                out.append(os.path.relpath(os.path.join(dirpath, f), self.dir).replace(os.sep, "/"))
        return out

    def _read(self, name):
        if self.zip:
            return self.zip.read("botocore/" + name)
        with open(os.path.join(self.dir, name), "rb") as f:
            return f.read()

    def service_model(self, service):
        prefix = "data/%s/" % service
        versions = sorted(
            {n[len(prefix):].split("/")[0] for n in self._names()
             if n.startswith(prefix) and n.split("/")[-1].startswith("service-2.json")}
        )
        if not versions:
            sys.exit("gen_models: botocore has no model for %r" % service)
        version = versions[-1]  # the newest API version (events has 2014-02-03 and 2015-10-07)
        base = "%s%s/service-2.json" % (prefix, version)
        names = set(self._names())
        if base + ".gz" in names:
            raw = gzip.decompress(self._read(base + ".gz"))
        else:
            raw = self._read(base)
        return json.loads(raw.decode("utf-8"))


def error_message_member(model):
    """`Message` if the service's exceptions spell it that way (Secrets Manager), else `message`."""
    upper = lower = 0
    for shape in model["shapes"].values():
        if shape.get("exception"):
            members = shape.get("members", {})
            upper += "Message" in members
            lower += "message" in members
    return "Message" if upper > lower else "message"


def compact(service, model):
    md = model["metadata"]
    shapes = model["shapes"]
    ops = {}
    roots = []
    for name in sorted(model["operations"]):
        op = model["operations"][name]
        inp = op.get("input", {}).get("shape")
        ops[name] = inp
        if inp:
            roots.append(inp)
    # Keep only the shapes reachable from operation inputs.
    keep = {}
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in keep:
            continue
        src = shapes[name]
        typ = src["type"]
        if typ not in SHAPE_KEYS:
            sys.exit("gen_models: %s: shape %s has unsupported type %r" % (service, name, typ))
        out = {"type": typ}
        for k in SHAPE_KEYS[typ]:
            if k in src:
                out[k] = src[k]
        out.update(OVERRIDES.get((service, name), {}))
        if typ == "structure":
            members = {}
            for mname, m in src.get("members", {}).items():
                cm = {"shape": m["shape"]}
                for k in MEMBER_KEYS:
                    if k in m:
                        cm[k] = m[k]
                members[mname] = cm
                stack.append(m["shape"])
            out["members"] = members
        elif typ == "list":
            out["member"] = src["member"]["shape"]
            stack.append(out["member"])
        elif typ == "map":
            out["key"] = src["key"]["shape"]
            out["value"] = src["value"]["shape"]
            stack += [out["key"], out["value"]]
        keep[name] = out
    meta = {
        "service": service,
        "apiVersion": md["apiVersion"],
        "protocol": md["protocol"],
        "errorMessageMember": error_message_member(model),
        "botocoreVersion": BOTOCORE_VERSION,
    }
    for k in ("jsonVersion", "targetPrefix", "endpointPrefix", "signingName", "serviceId"):
        if k in md:
            meta[k] = md[k]
    return meta, ops, keep


def dumps(v):
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def render(meta, ops, shapes):
    lines = ["{", '"metadata":' + dumps(meta) + ",", '"operations":' + dumps(ops) + ",", '"shapes":{']
    names = sorted(shapes)
    for i, name in enumerate(names):
        sep = "," if i + 1 < len(names) else ""
        lines.append(dumps(name) + ":" + dumps(shapes[name]) + sep)
    lines.append("}}")
    return "\n".join(lines) + "\n"


def fetch_wheel():
    cache = os.environ.get("SLUICE_BOTOCORE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "sluice-botocore")
    os.makedirs(cache, exist_ok=True)
    wheel = os.path.join(cache, "botocore-%s-py3-none-any.whl" % BOTOCORE_VERSION)
    if not os.path.exists(wheel):
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                               "botocore==%s" % BOTOCORE_VERSION, "-d", cache])
    return wheel


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 if stale")
    ap.add_argument("--botocore-dir", help="unpacked botocore package directory (contains data/)")
    ap.add_argument("--wheel", help="botocore wheel file")
    ap.add_argument("--out", default=OUT_DIR, help="output directory (default: crates/wire/models)")
    args = ap.parse_args()
    if args.botocore_dir:
        src = Source(botocore_dir=args.botocore_dir)
    else:
        src = Source(wheel=args.wheel or fetch_wheel())
    stale = []
    for service in SERVICES:
        text = render(*compact(service, src.service_model(service)))
        path = os.path.join(args.out, service + ".json")
        old = None
        if os.path.exists(path):
            with open(path, "r", encoding="utf-8", newline="") as f:
                old = f.read()
        if old == text:
            continue
        if args.check:
            stale.append(path)
        else:
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            print("wrote", path)
    if stale:
        print("gen_models: stale models (re-run crates/wire/tools/gen_models.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
