#!/usr/bin/env python3
"""Generate crates/protobuf-json/src/generated.rs: the protobuf schema table of every
Kubernetes message, with the JSON name of every field.

Inputs (all offline on the dev machine):
  * the k8s-pb crate sources (prost structs: module path = proto package, `tag`, wire kind,
    message types, and `impl Resource` apiVersion/kind);
  * the upstream OpenAPI v2 schema (exact JSON property names, `required`, and the
    apiVersion/kind -> definition map via x-kubernetes-group-version-kind);
  * optionally a kubectl binary: its embedded gzipped FileDescriptorProtos keep the gogoproto
    options, so `(gogoproto.nullable) = false` tells value fields from pointer fields (which
    decides whether a zero present on the wire reaches the JSON), and proto field names fill in
    JSON names for messages OpenAPI does not describe.

Usage (from the workspace root):
  python3 crates/protobuf-json/gen/generate.py
      [--k8s-pb ~/.cargo/registry/src/*/k8s-pb-0.9.0/src]
      [--openapi /work/shared/reference/kubernetes-openapi-v2-release-1.36.json]
      [--kubectl-binary /usr/lib/google-cloud-sdk/bin/kubectl.1.33]   (newest found by default)
The output is deterministic and is not run through rustfmt (lib.rs marks it rustfmt::skip).
Diagnostics (guessed JSON names, inlined embedded structs, OpenAPI/descriptor disagreements)
go to stderr.
"""

import argparse
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "src", "generated.rs")

# Packages we leave out: test fixtures of apimachinery only.
SKIP_MODULES = {("apimachinery", "pkg", "apis", "testapigroup")}

META = "k8s.io.apimachinery.pkg.apis.meta.v1."
# Messages whose JSON form is not an object of their fields (custom MarshalJSON upstream).
SPECIAL = {
    META + "Time": "Time",
    META + "MicroTime": "MicroTime",
    META + "Duration": "Duration",
    META + "FieldsV1": "RawJson",
    META + "Verbs": "StringList",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "RawJson",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "Quantity",
    "k8s.io.apimachinery.pkg.api.resource.QuantityValue": "Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
}
for _v in ("v1", "v1beta1"):
    _p = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.%s." % _v
    SPECIAL[_p + "JSON"] = "RawJson"
    SPECIAL[_p + "JSONSchemaPropsOrArray"] = "PropsOrArray"
    SPECIAL[_p + "JSONSchemaPropsOrBool"] = "PropsOrBool"
    SPECIAL[_p + "JSONSchemaPropsOrStringArray"] = "PropsOrStringArray"
# `ExtraValue` (user info extras) is `[]string` in Go, a wrapper message on the wire.
for _g in ("authentication", "authorization", "certificates"):
    for _v in ("v1", "v1beta1", "v1alpha1"):
        SPECIAL["k8s.io.api.%s.%s.ExtraValue" % (_g, _v)] = "StringList"

SCALARS = {
    "string": "Str",
    "bytes": "Bytes",
    "int32": "I32",
    "int64": "I64",
    "bool": "Bool",
    "double": "F64",
}


def norm(name):
    """Key used to match a snake_case Rust field with a camelCase/dashed JSON name."""
    if name.startswith("r#"):
        name = name[2:]
    return re.sub(r"[^a-z0-9]", "", name.lower())


def lower_camel(name):
    if name.startswith("r#"):
        name = name[2:]
    parts = name.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def module_of(path, root):
    rel = os.path.relpath(os.path.dirname(path), root)
    return tuple(rel.split(os.sep))


def proto_package(mod):
    return "k8s.io." + ".".join(mod)


def openapi_prefix(mod):
    return "io.k8s." + ".".join((mod[0].replace("_", "-"),) + mod[1:])


def split_type(ty):
    """Strip prost wrappers; return the innermost Rust path."""
    ty = re.sub(r"\s+", "", ty).replace(",>", ">")
    changed = True
    while changed:
        changed = False
        for w in (
            "::core::option::Option<",
            "::prost::alloc::vec::Vec<",
            "::prost::alloc::boxed::Box<",
        ):
            if ty.startswith(w) and ty.endswith(">"):
                ty = ty[len(w) : -1]
                changed = True
        m = re.match(r"^::prost::alloc::collections::BTreeMap<::prost::alloc::string::String,(.*)>$", ty)
        if m:
            ty = m.group(1)
            changed = True
    return ty


def resolve(mod, path):
    segs = path.split("::")
    cur = list(mod)
    while segs and segs[0] == "super":
        segs.pop(0)
        cur.pop()
    return tuple(cur + segs[:-1]), segs[-1]


def field_chunks(body):
    """Yield (doc, attr, rust_name, type) for every prost field of a struct body."""
    doc, lines = [], body.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("///"):
            doc.append(line[3:].strip())
        elif line.startswith("#[prost("):
            attr = line
            while not attr.endswith(")]"):
                i += 1
                attr += " " + lines[i].strip()
            i += 1
            decl = lines[i].strip()
            while not (decl.endswith(",") and decl.count("<") == decl.count(">")):
                i += 1
                decl += lines[i].strip()
            fm = re.match(r"pub (r#\w+|\w+):(.*),$", decl)
            yield " ".join(doc), attr[len("#[prost(") : -2], fm.group(1), fm.group(2)
            doc = []
        elif line:
            doc = []
        i += 1


def parse_field(mod, name, doc, attr, fname, ty):
    tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
    kind = attr.split(",")[0].strip()
    if kind.startswith("btree_map"):
        card, wire = "Map", re.search(r'btree_map = "string, (\w+)"', attr).group(1)
    elif "repeated" in attr:
        card, wire = "Many", kind
    else:
        card, wire = "One", kind
    if wire.startswith("bytes"):
        wire = "bytes"
    target = None
    if wire == "message":
        target = resolve(mod, split_type(ty))
    elif wire not in SCALARS:
        sys.exit("unsupported prost field kind %r in %s.%s" % (attr, name, fname))
    words = doc.split()
    doc_name = words[0].rstrip(",.:") if words else ""
    return {"tag": tag, "rust": fname, "card": card, "wire": wire, "target": target, "doc_name": doc_name}


def go_json_name(go_name):
    """Upstream's JSON spelling of a Go field name: lower the leading initialism (CABundle -> caBundle)."""
    m = re.match(r"^([A-Z]+)(.*)$", go_name)
    if not m:
        return go_name
    head, rest = m.groups()
    if len(head) > 1 and rest[:1].islower():
        return head[:-1].lower() + head[-1] + rest
    return head.lower() + rest


def parse_crate(root):
    """Return {(module, rust_name): {"fields": [...], "resource": (apiVersion, kind)|None}}."""
    msgs = {}
    for path in sorted(glob.glob(os.path.join(root, "**", "mod.rs"), recursive=True)):
        mod = module_of(path, root)
        if any(mod[: len(s)] == s for s in SKIP_MODULES):
            continue
        text = open(path).read()
        for m in re.finditer(r"^pub struct (\w+) \{\}$|^pub struct (\w+) \{$(.*?)^\}", text, re.S | re.M):
            name = m.group(1) or m.group(2)
            fields = [parse_field(mod, name, *f) for f in field_chunks(m.group(3) or "")]
            msgs[(mod, name)] = {"fields": fields, "resource": None}
        for m in re.finditer(
            r'impl crate::Resource for (\w+) \{\s*const API_VERSION: &\'static str = "([^"]*)";.*?const KIND: &\'static str = "([^"]*)";',
            text,
            re.S,
        ):
            if (mod, m.group(1)) in msgs:
                msgs[(mod, m.group(1))]["resource"] = (m.group(2), m.group(3))
    return msgs


# ---------------------------------------------------------------------------------------------
# Descriptors embedded in a kubectl binary: gzipped FileDescriptorProtos of every k8s.io/api
# package as compiled by go-to-protobuf, *with* the gogoproto options the published
# generated.proto files strip. `(gogoproto.nullable) = false` says the Go field is a value, not
# a pointer: that decides whether a zero value present on the wire is written to JSON.

def pb_fields(buf):
    """Yield (field number, wire type, value) of a protobuf message (value: int or bytes)."""
    i = 0
    while i < len(buf):
        key, i = pb_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = pb_varint(buf, i)
        elif wt == 2:
            n, i = pb_varint(buf, i)
            v, i = buf[i : i + n], i + n
        elif wt == 1:
            v, i = buf[i : i + 8], i + 8
        elif wt == 5:
            v, i = buf[i : i + 4], i + 4
        else:
            raise ValueError("unsupported wire type %d" % wt)
        yield num, wt, v


def pb_varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def kubectl_descriptors(binary):
    """{proto full message name: {field number: {"name", "nullable", "embed"}}} from a kubectl binary."""
    import zlib

    data = open(binary, "rb").read()
    out = {}
    for m in re.finditer(b"\x1f\x8b\x08\x00\x00\x00\x00\x00", data):
        try:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[m.start() : m.start() + 4_000_000])
        except zlib.error:
            continue
        if b"generated.proto" not in d[:120]:
            continue
        try:
            fields = list(pb_fields(d))
        except (ValueError, IndexError):
            continue
        package = next((v.decode() for n, _, v in fields if n == 2), "")
        for n, _, v in fields:
            if n == 4:
                add_descriptor(package, v, out)
    return out


def add_descriptor(prefix, msg, out):
    fields = list(pb_fields(msg))
    name = prefix + "." + next(v.decode() for n, _, v in fields if n == 1)
    table = out.setdefault(name, {})
    for n, _, v in fields:
        if n == 3:
            add_descriptor(name, v, out)
        if n != 2:
            continue
        f = {k: val for k, _, val in pb_fields(v) if k in (1, 3, 8)}
        opts = {k: val for k, _, val in pb_fields(f.get(8, b""))}
        table[f[3]] = {"name": f[1].decode(), "nullable": opts.get(65001, 1) != 0, "embed": opts.get(65002, 0) != 0}


def main():
    ap = argparse.ArgumentParser()
    default_pb = sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*/k8s-pb-0.9.0/src")))
    ap.add_argument("--k8s-pb", default=default_pb[-1] if default_pb else None)
    ap.add_argument("--openapi", default="/work/shared/reference/kubernetes-openapi-v2-release-1.36.json")
    ap.add_argument("--out", default=OUT)
    kubectls = sorted(glob.glob("/usr/lib/google-cloud-sdk/bin/kubectl.1.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
    ap.add_argument("--kubectl-binary", default=kubectls[-1] if kubectls else None,
                    help="kubectl whose embedded descriptors give Go pointer-ness (gogoproto.nullable)")
    args = ap.parse_args()
    if not args.k8s_pb:
        sys.exit("k8s-pb sources not found; pass --k8s-pb")

    defs = json.load(open(args.openapi))["definitions"]
    defs_ci = {k.lower(): k for k in defs}
    msgs = parse_crate(args.k8s_pb)
    descs = kubectl_descriptors(args.kubectl_binary) if args.kubectl_binary else {}
    if not descs:
        print("warning: no kubectl descriptors; zero-value presence falls back to heuristics", file=sys.stderr)

    descs_ci = {}
    for k in descs:
        descs_ci.setdefault(k.lower(), []).append(k)
    # Proto full name, spelled as upstream (OpenAPI casing) where known.
    full = {}
    openapi_def = {}
    for (mod, name) in msgs:
        d = defs_ci.get((openapi_prefix(mod) + "." + name).lower())
        proper = d.rsplit(".", 1)[1] if d else name
        # Names prost re-cased that OpenAPI does not list (old versions): recover from siblings.
        if not d:
            for k in defs:
                if k.lower().endswith("." + name.lower()) and k.startswith(openapi_prefix(mod)[: -len(mod[-1])]):
                    proper = k.rsplit(".", 1)[1]
                    break
        if not d:
            for k in descs_ci.get((proto_package(mod) + "." + name).lower(), []):
                proper = k.rsplit(".", 1)[1]
        full[(mod, name)] = proto_package(mod) + "." + proper
        openapi_def[(mod, name)] = d

    # Global property dictionary (normalized -> JSON names), the fallback for messages without a definition.
    global_props = {}
    for d in defs.values():
        for p in d.get("properties", {}):
            global_props.setdefault(norm(p), set()).add(p)

    order = sorted(msgs, key=lambda k: full[k])
    index = {k: i for i, k in enumerate(order)}
    def candidates_of(key):
        mod, _ = key
        d = openapi_def[key]
        if d:
            return [defs[d]]
        # Same message in another version of the same group.
        group_prefix = openapi_prefix(mod)[: -len(mod[-1])]
        short = full[key].rsplit(".", 1)[1].lower()
        return [defs[k] for k in sorted(defs, reverse=True)
                if k.startswith(group_prefix) and k.rsplit(".", 1)[1].lower() == short]

    def is_inline_candidate(f):
        return (f["wire"] == "message" and f["card"] == "One"
                and norm(f["rust"]) == norm(f["target"][1]) and full[f["target"]] not in SPECIAL)

    def known_prop(cands, f):
        return any(norm(p) == norm(f["rust"]) for c in cands for p in c.get("properties", {}))

    # Types embedded with `json:",inline"` somewhere OpenAPI lets us see it; used to decide for
    # messages OpenAPI does not describe.
    learned_inline = set()
    for key in order:
        cands = candidates_of(key)
        for f in msgs[key]["fields"]:
            if openapi_def[key] and is_inline_candidate(f) and not known_prop(cands, f):
                learned_inline.add(f["target"][1])

    guessed = []
    stats = {"descriptor": 0}
    out_msgs = []
    for key in order:
        mod, name = key
        fname = full[key]
        candidates = candidates_of(key)
        fields = []
        for f in sorted(msgs[key]["fields"], key=lambda f: f["tag"]):
            json_name, required, prop = None, False, None
            for c in candidates:
                for p, schema in c.get("properties", {}).items():
                    if norm(p) == norm(f["rust"]):
                        json_name, prop = p, schema
                        required = p in c.get("required", [])
                        break
                if json_name:
                    break
            desc = descs.get(fname, {}).get(f["tag"])
            if desc and json_name and desc["name"] != json_name:
                print("warning: %s tag %d: OpenAPI says %s, kubectl's descriptor %s"
                      % (fname, f["tag"], json_name, desc["name"]), file=sys.stderr)
            if desc:
                stats["descriptor"] += 1
            # go-to-protobuf rarely marks embedding (gogoproto.embed), so mostly infer it.
            inline = (desc and desc["embed"]) or (
                json_name is None and is_inline_candidate(f)
                and (openapi_def[key] or f["target"][1] in learned_inline))
            if inline:
                # A Go embedded struct (`json:",inline"`): its JSON properties are the parent's.
                fields.append((f["tag"], "", "M(%d)" % index[f["target"]], "Inline", False))
                print("inline: %s.%s" % (fname, f["rust"]), file=sys.stderr)
                continue
            if not json_name and desc:
                json_name = desc["name"]
                if json_name[:1].isupper() or json_name[1:2].isupper():
                    # go-to-protobuf fell back to the Go field name (lower-cased first letter)
                    # where it could not parse the json tag: "uID", "aPIGroup", "Webhooks".
                    json_name = go_json_name(json_name[:1].upper() + json_name[1:])
            if not json_name:
                g = global_props.get(norm(f["rust"]), set())
                if len(g) == 1:
                    json_name = next(iter(g))
                elif f["doc_name"] and norm(f["doc_name"]) == norm(f["rust"]):
                    json_name = go_json_name(f["doc_name"])
                    if fname not in SPECIAL:
                        guessed.append("%s.%s -> %s (doc)" % (fname, f["rust"], json_name))
                else:
                    json_name = lower_camel(f["rust"])
                    if fname not in SPECIAL:
                        guessed.append("%s.%s -> %s" % (fname, f["rust"], json_name))
            # Whether a zero value present on the wire is written: Go writes it for pointers
            # (nullable) and for fields without omitempty (OpenAPI `required`).
            if desc:
                keep_zero = desc["nullable"] or required
            elif f["wire"] in ("string", "bytes"):
                keep_zero = required
            else:
                # Unknown pointer-ness: keeping is safe (`replicas: 0` must survive).
                keep_zero = True
            if f["wire"] == "message":
                tgt = f["target"]
                if tgt not in index:
                    sys.exit("unresolved message type %r in %s" % (tgt, fname))
                ty = "M(%d)" % index[tgt]
                special = SPECIAL.get(full[tgt])
                if prop is not None and f["card"] == "One":
                    is_array = prop.get("type") == "array"
                    if is_array != (special == "StringList"):
                        print("warning: shape mismatch %s.%s (%s)" % (fname, json_name, full[tgt]), file=sys.stderr)
            else:
                ty = SCALARS[f["wire"]]
            fields.append((f["tag"], json_name, ty, f["card"], keep_zero))
        out_msgs.append((fname, SPECIAL.get(fname, "Plain"), fields))

    missing_special = set(SPECIAL) - {m[0] for m in out_msgs}
    # v1alpha1/v1beta1 variants that k8s-pb does not ship are expected to be missing.
    for s in sorted(missing_special):
        if s.endswith("ExtraValue") or "apiextensions" in s:
            continue
        sys.exit("special message %s not found in k8s-pb" % s)

    # apiVersion/kind -> message.
    by_def = {openapi_def[k]: k for k in msgs if openapi_def[k]}
    kinds = {}
    for dname, d in defs.items():
        for gvk in d.get("x-kubernetes-group-version-kind", []):
            if dname not in by_def:
                continue
            av = gvk["version"] if not gvk["group"] else gvk["group"] + "/" + gvk["version"]
            kinds[(av, gvk["kind"])] = index[by_def[dname]]
    for k, m in msgs.items():
        if m["resource"] and m["resource"] not in kinds:
            kinds[m["resource"]] = index[k]
            # Its list type, if the package has one.
            lk = (k[0], k[1] + "List")
            if lk in msgs and (m["resource"][0], m["resource"][1] + "List") not in kinds:
                kinds[(m["resource"][0], m["resource"][1] + "List")] = index[lk]

    w = []
    w.append("// @generated by crates/protobuf-json/gen/generate.py from k8s-pb %s and %s; do not edit.\n" % (
        os.path.basename(os.path.dirname(args.k8s_pb.rstrip("/"))), os.path.basename(args.openapi)))
    w.append("use crate::schema::{Card::*, Message, Special, Ty::*};\n")
    w.append("use crate::schema::{f, k};\n\n")
    w.append("pub(crate) static MESSAGES: [Message; %d] = [\n" % len(out_msgs))
    for i, (fname, special, fields) in enumerate(out_msgs):
        w.append("    // %d\n" % i)
        w.append('    Message {\n        name: "%s",\n        special: Special::%s,\n        fields: &[\n' % (fname, special))
        for tag, jn, ty, card, req in fields:
            w.append('            %s(%d, "%s", %s, %s),\n' % ("k" if req else "f", tag, jn, ty, card))
        w.append("        ],\n    },\n")
    w.append("];\n\n")
    w.append("/// (apiVersion, kind, index into MESSAGES), sorted for binary search.\n")
    w.append("pub(crate) static KINDS: [(&str, &str, u16); %d] = [\n" % len(kinds))
    for (av, kind), i in sorted(kinds.items()):
        w.append('    ("%s", "%s", %d),\n' % (av, kind, i))
    w.append("];\n")
    with open(args.out, "w") as fh:
        fh.write("".join(w))

    for g in guessed:
        print("guessed: " + g, file=sys.stderr)
    print(
        "wrote %s: %d messages, %d fields, %d kinds, %d guessed names"
        % (args.out, len(out_msgs), sum(len(m[2]) for m in out_msgs), len(kinds), len(guessed))
        + "; %d fields described by kubectl's descriptors" % stats["descriptor"],
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
