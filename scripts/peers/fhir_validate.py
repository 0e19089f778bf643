"""Validates FHIR R4 Bundles with fhir.resources (R4 4.0.1 models, installed by
scripts/peers.sh ensure_fhir_validator).

usage: fhir_validate.py DIR     every DIR/*.json must be a Bundle; each entry's resource is
parsed with the model of its resourceType, the Bundle with the Bundle model. The models check
structure, types, cardinality, required elements and most primitive formats. They do not check
codes against required bindings, and they accept date-times without seconds or zone, so the
codes, date-times and Base64 data this project writes are checked here too, with the patterns
of the FHIR R4 specification (datatypes.html).
prints: validated N bundles, M resources   (exit 0), or every error (exit 1)
"""
import base64
import binascii
import json
import pathlib
import re
import sys

import fhir.resources
from fhir.resources import construct_fhir_element
from fhir.resources.bundle import Bundle

assert fhir.resources.__fhir_version__ == "4.0.1", fhir.resources.__fhir_version__

# Required bindings (FHIR R4 value sets) of the elements lab-results writes.
REQUIRED = {
    ("Observation", "status"): {"registered", "preliminary", "final", "amended", "corrected",
                                "cancelled", "entered-in-error", "unknown"},
    ("DiagnosticReport", "status"): {"registered", "partial", "preliminary", "final", "amended",
                                     "corrected", "appended", "cancelled", "entered-in-error",
                                     "unknown"},
    ("Patient", "gender"): {"male", "female", "other", "unknown"},
}
COMPARATORS = {"<", "<=", ">=", ">"}

# FHIR R4 primitive patterns (datatypes.html), and the elements of each type written here.
YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
ZONE = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
CLOCK = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
DAY = r"-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])"
PATTERNS = {
    "dateTime": re.compile(rf"{YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T{CLOCK}{ZONE})?)?)?"),
    "instant": re.compile(rf"{YEAR}{DAY}T{CLOCK}{ZONE}"),
    "date": re.compile(rf"{YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?"),
    "time": re.compile(CLOCK),
}
TYPES = {
    "effectiveDateTime": "dateTime", "valueDateTime": "dateTime", "collectedDateTime": "dateTime",
    "receivedTime": "dateTime", "time": "dateTime", "start": "dateTime", "end": "dateTime",
    "issued": "instant", "birthDate": "date", "valueTime": "time",
}


def walk(node, path, errors):
    """Checks Quantity.comparator and Attachment.data wherever they are."""
    if isinstance(node, dict):
        if "comparator" in node and node["comparator"] not in COMPARATORS:
            errors.append(f"{path}.comparator: {node['comparator']!r} is not in QuantityComparator")
        if "data" in node and isinstance(node["data"], str):
            try:
                base64.b64decode(node["data"], validate=True)
            except (binascii.Error, ValueError) as e:
                errors.append(f"{path}.data: not Base64: {e}")
        for k, v in node.items():
            kind = TYPES.get(k)
            if kind and not (isinstance(v, str) and PATTERNS[kind].fullmatch(v)):
                errors.append(f"{path}.{k}: {v!r} is not a FHIR {kind}")
            walk(v, f"{path}.{k}", errors)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            walk(v, f"{path}[{i}]", errors)


def main():
    files = sorted(pathlib.Path(sys.argv[1]).glob("*.json"))
    errors, resources = [], 0
    for f in files:
        bundle = json.loads(f.read_text())
        try:
            Bundle.parse_obj(bundle)
        except Exception as e:  # the model's validation error, whatever its class
            errors.append(f"{f.name}: Bundle: {e}")
        if bundle.get("type") != "transaction":
            errors.append(f"{f.name}: Bundle.type is {bundle.get('type')!r}, expected transaction")
        for i, entry in enumerate(bundle.get("entry", [])):
            res = entry.get("resource", {})
            kind = res.get("resourceType")
            where = f"{f.name}: entry[{i}] {kind}"
            resources += 1
            try:
                construct_fhir_element(kind, res)
            except Exception as e:
                errors.append(f"{where}: {e}")
            for (rtype, element), allowed in REQUIRED.items():
                if kind == rtype and element in res and res[element] not in allowed:
                    errors.append(f"{where}.{element}: {res[element]!r} is not in the required value set")
            if entry.get("request", {}).get("method") not in {"POST", "PUT", "GET", "DELETE", "PATCH", "HEAD"}:
                errors.append(f"{where}: request.method {entry.get('request')!r}")
            walk(res, where, errors)
    if errors:
        print("\n".join(errors))
        print(f"{len(errors)} errors in {len(files)} bundles")
        sys.exit(1)
    if not files:
        print("no bundles to validate")
        sys.exit(1)
    print(f"validated {len(files)} bundles, {resources} resources")


main()
