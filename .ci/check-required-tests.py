"""Fail CI when a test that needs a real service (PostgreSQL, ...) was skipped or never ran."""

import sys
import xml.etree.ElementTree as ET

REQUIRED = {"postgresql": "[postgresql"}  # service -> marker in the test id

cases = list(ET.parse(sys.argv[1]).getroot().iter("testcase"))
problems = []
for service, marker in REQUIRED.items():
    mine = [case for case in cases if marker in case.get("name", "")]
    skipped = [case for case in mine if case.find("skipped") is not None]
    if not mine:
        problems.append(f"no {service} test ran")
    for case in skipped:
        reason = case.find("skipped").get("message", "")
        problems.append(f"{case.get('classname')}::{case.get('name')} skipped: {reason}")
    print(f"{service}: {len(mine) - len(skipped)} tests ran, {len(skipped)} skipped")
if problems:
    print("required service tests did not run:", *problems, sep="\n  ")
    sys.exit(1)
