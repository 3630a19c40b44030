"""Trims an ocsf-lib compiled OCSF schema to what mcpwatch's OCSF test needs.

Run: python -m ocsf.compile <ocsf-schema checkout> > full.json
     python trim.py full.json <commit> > ocsf-1.6.0-mcpwatch.json
Keeps the classes mcpwatch emits, every object reachable from them, and of
each attribute: its type, object type, requirement, array flag, profile and
enum values (descriptions dropped).
"""
import json, sys
s = json.load(open(sys.argv[1]))
CLASSES = ["detection_finding", "process_activity", "file_activity", "network_activity", "dns_activity", "base_event"]
def attrs(a):
    out = {}
    for n, v in a.items():
        d = {"type": v["type"], "requirement": v.get("requirement") or "optional"}
        if v.get("is_array"): d["is_array"] = True
        if v.get("profile"): d["profile"] = v["profile"]
        if v.get("object_type"): d["object_type"] = v["object_type"]
        if v.get("enum"): d["enum"] = sorted(v["enum"].keys(), key=lambda k: (len(k), k))
        out[n] = d
    return out
objects = {}
todo = []
def visit(a):
    for v in a.values():
        t = v.get("object_type") or (v["type"] if v["type"] in s["objects"] else None)
        if t and t not in objects and t not in todo:
            todo.append(t)
classes = {}
for c in CLASSES:
    k = s["classes"][c]
    classes[c] = {"uid": k["uid"], "category": k.get("category"), "attributes": attrs(k["attributes"])}
    visit(k["attributes"])
while todo:
    t = todo.pop()
    o = s["objects"][t]
    objects[t] = {"attributes": attrs(o["attributes"])}
    visit(o["attributes"])
out = {
    "_source": f"ocsf/ocsf-schema tag 1.6.0 (commit {sys.argv[2]}), compiled with ocsf-lib 0.10.4 (PyPI): python -m ocsf.compile, then trim.py",
    "version": s["version"],
    "categories": {k: v.get("uid") for k, v in s["categories"].items()},
    "types": {k: v.get("type") or k for k, v in s["types"].items()},
    "classes": classes,
    "objects": dict(sorted(objects.items())),
}
json.dump(out, sys.stdout, indent=0, sort_keys=False)
