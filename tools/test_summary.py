#!/usr/bin/env python3
"""Count Weir's test results after `bazel test` and print `N passed, N failed`.

Used by `./weir test`; standard library only.

    test_summary.py record --name NAME --exit-code RC --out FILE.json
                           [--bep BEP.json] [--testlogs DIR --newer STAMP]
    test_summary.py total FILE.json [FILE.json ...]

`record` summarises one `bazel test` invocation.  The primary source is the
Build Event Protocol file written with `--build_event_json_file`: it names
every test target of that invocation (including results served from Bazel's
cache, whose test.xml is older than the run) together with the path of its
JUnit XML, and it reports targets that failed to build.  For each test run:

  * every <testcase> in test.xml counts as passed, failed (it has a <failure>
    or <error> child) or skipped (GTEST_SKIP, DISABLED_ tests: not counted);
  * an XML without any <testcase> (or no XML at all) counts the target itself
    as 1 passed or 1 failed according to Bazel's status for it;
  * if Bazel says the run failed but its XML shows no failing test case
    (a crash or sanitizer report after the test cases finished, a timeout),
    one more failure is counted for the target;
  * a test target that failed to build or never ran counts as 1 failed;
  * a non-zero Bazel exit that none of the above explains (e.g. a broken
    BUILD file, a library that does not compile) counts as 1 failed, so a
    broken build can never end as "0 passed, 0 failed".

Without a BEP file (Bazel stopped before writing it) `record` falls back to
the test.xml files under --testlogs that are newer than --newer.

`total` adds up the recorded invocations, prints the failures, and ends with
the single line `N passed, N failed`; it exits 1 if anything failed.
"""

import argparse
import json
import os
import sys
import urllib.parse
import xml.etree.ElementTree as ET

PASSING_STATUSES = {"PASSED", "FLAKY"}

# Bazel exit codes (see `bazel help` / ExitCode.java).
EXIT_OK = 0
EXIT_TESTS_FAILED = 3
EXIT_NO_TESTS_FOUND = 4


def uri_to_path(uri):
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return None
    return urllib.parse.unquote(parsed.path)


def parse_junit(path):
    """Return (passed, failed_names, skipped) or None if unreadable/empty."""
    if not path or not os.path.isfile(path):
        return None
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return None
    passed, skipped, failed = 0, 0, []
    cases = list(root.iter("testcase"))
    if not cases:
        return None
    for case in cases:
        name = case.get("name", "?")
        cls = case.get("classname")
        full = "%s.%s" % (cls, name) if cls else name
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            message = (bad.get("message") or bad.text or "").strip()
            first = message.splitlines()[0] if message else ""
            if len(first) > 120:
                first = first[:117] + "..."
            failed.append("%s (%s)" % (full, first) if first else full)
        elif (case.get("status") == "notrun"
              or case.get("result") in ("skipped", "suppressed")
              or case.find("skipped") is not None):
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


class Record:
    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.failures = []  # human-readable lines
        self.notes = []

    def fail(self, what, count=1):
        self.failed += count
        self.failures.append(what)

    def to_json(self):
        return {
            "name": self.name,
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "failures": self.failures,
            "notes": self.notes,
        }


def read_bep(path):
    events = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except ValueError:
                # A truncated last line if Bazel was killed; ignore it.
                continue
    return events


def is_test_kind(configured):
    kind = configured.get("targetKind", "")
    if "test_suite" in kind:
        return False
    return kind.endswith("_test rule") or "testSize" in configured


def count_from_bep(rec, events):
    tests = set()            # labels of configured test targets
    build_failed = {}        # label -> reason
    results = {}             # (label, config, run, shard) -> (attempt, event)
    summaries = {}           # label -> overallStatus
    exit_name = None

    for ev in events:
        eid = ev.get("id", {})
        if "targetConfigured" in eid:
            label = eid["targetConfigured"].get("label")
            if is_test_kind(ev.get("configured", {})):
                tests.add(label)
        elif "targetCompleted" in eid:
            label = eid["targetCompleted"].get("label")
            if "aborted" in ev:
                build_failed[label] = ev["aborted"].get("reason", "aborted")
            elif not ev.get("completed", {}).get("success", False):
                build_failed[label] = "failed to build"
        elif "testResult" in eid:
            tid = eid["testResult"]
            key = (tid.get("label"),
                   tid.get("configuration", {}).get("id", ""),
                   tid.get("run", 1), tid.get("shard", 1))
            attempt = tid.get("attempt", 1)
            if key not in results or results[key][0] <= attempt:
                results[key] = (attempt, ev.get("testResult", {}))
        elif "testSummary" in eid:
            label = eid["testSummary"].get("label")
            summaries[label] = ev.get("testSummary", {}).get("overallStatus", "")
        elif "buildFinished" in eid:
            exit_name = ev.get("finished", {}).get("exitCode", {}).get("name")

    ran = set()
    for (label, _cfg, run, shard), (_attempt, result) in sorted(results.items()):
        ran.add(label)
        status = result.get("status", "NO_STATUS")
        ok = status in PASSING_STATUSES
        where = label
        if run != 1 or shard != 1:
            where = "%s (run %s, shard %s)" % (label, run, shard)
        xml = None
        for out in result.get("testActionOutput", []):
            if out.get("name") == "test.xml":
                xml = uri_to_path(out.get("uri", ""))
        parsed = parse_junit(xml)
        if parsed is None:
            if ok:
                rec.passed += 1
            else:
                rec.fail("%s: %s" % (where, status))
            continue
        passed, failed_cases, skipped = parsed
        rec.passed += passed
        rec.skipped += skipped
        for case in failed_cases:
            rec.fail("%s: %s" % (where, case))
        if not ok and not failed_cases:
            rec.fail("%s: %s although no test case failed "
                     "(crash, sanitizer report or timeout; see its test.log)"
                     % (where, status))

    for label in sorted(tests - ran):
        if label in build_failed:
            rec.fail("%s: %s" % (label, build_failed[label].lower()
                                 .replace("_", " ")))
        else:
            status = summaries.get(label) or "NO_STATUS"
            rec.fail("%s: not run (%s)" % (label, status))
    return exit_name


def count_from_testlogs(rec, testlogs, stamp):
    """Fallback: every test.xml under testlogs newer than the stamp file."""
    if not testlogs or not os.path.isdir(testlogs):
        return
    since = os.stat(stamp).st_mtime if stamp and os.path.exists(stamp) else 0
    for dirpath, _dirs, files in os.walk(testlogs, followlinks=False):
        if "test.xml" not in files or "test_attempts" in dirpath:
            continue
        path = os.path.join(dirpath, "test.xml")
        if os.stat(path).st_mtime < since:
            continue
        target = os.path.relpath(dirpath, testlogs)
        parsed = parse_junit(path)
        if parsed is None:
            # No test cases: judge from the suite's failure counters.
            failed = False
            try:
                root = ET.parse(path).getroot()
                for suite in root.iter("testsuite"):
                    if int(suite.get("failures", "0") or 0) or \
                       int(suite.get("errors", "0") or 0):
                        failed = True
            except (ET.ParseError, OSError, ValueError):
                failed = True
            if failed:
                rec.fail("//%s: failed" % target)
            else:
                rec.passed += 1
            continue
        passed, failed_cases, skipped = parsed
        rec.passed += passed
        rec.skipped += skipped
        for case in failed_cases:
            rec.fail("//%s: %s" % (target, case))


def cmd_record(args):
    rec = Record(args.name)
    exit_code = args.exit_code
    if args.bep and os.path.isfile(args.bep) and os.path.getsize(args.bep):
        count_from_bep(rec, read_bep(args.bep))
    else:
        rec.notes.append("no build event file; counted test.xml files "
                         "written during this run")
        count_from_testlogs(rec, args.testlogs, args.newer)
        if exit_code == EXIT_OK and rec.passed == 0 and rec.failed == 0:
            rec.fail("bazel wrote no build event file and no test results")

    if exit_code != EXIT_OK and rec.failed == 0:
        if exit_code == EXIT_TESTS_FAILED:
            rec.fail("bazel reported failing tests (exit code 3)")
        elif exit_code == EXIT_NO_TESTS_FOUND:
            rec.fail("no test targets matched (bazel exit code 4)")
        else:
            rec.fail("bazel failed with exit code %d before or outside the "
                     "tests (build or BUILD file errors above)" % exit_code)
    elif exit_code not in (EXIT_OK, EXIT_TESTS_FAILED):
        rec.notes.append("bazel exit code %d: the build had errors" % exit_code)

    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(rec.to_json(), f)
    return 0


def cmd_total(args):
    passed = failed = skipped = 0
    lines = []
    bad = False
    for path in args.records:
        try:
            with open(path, encoding="utf-8") as f:
                rec = json.load(f)
        except (OSError, ValueError) as exc:
            lines.append("%s: unreadable record (%s)" % (path, exc))
            failed += 1
            bad = True
            continue
        passed += rec["passed"]
        failed += rec["failed"]
        skipped += rec["skipped"]
        extra = ", %d skipped" % rec["skipped"] if rec["skipped"] else ""
        lines.append("[%s] %d passed, %d failed%s"
                     % (rec["name"], rec["passed"], rec["failed"], extra))
        for note in rec.get("notes", []):
            lines.append("[%s] note: %s" % (rec["name"], note))
        for failure in rec["failures"]:
            lines.append("[%s] FAILED %s" % (rec["name"], failure))

    print("")
    print("==================== Weir test summary ====================")
    for line in lines:
        print(line)
    print("%d passed, %d failed" % (passed, failed))
    sys.stdout.flush()
    return 1 if (failed or bad) else 0


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    rec = sub.add_parser("record", help="summarise one bazel test run")
    rec.add_argument("--name", required=True)
    rec.add_argument("--exit-code", type=int, required=True)
    rec.add_argument("--bep", help="--build_event_json_file of the run")
    rec.add_argument("--testlogs", help="bazel-testlogs directory (fallback)")
    rec.add_argument("--newer", help="stamp file touched before the run")
    rec.add_argument("--out", required=True)
    rec.set_defaults(func=cmd_record)

    tot = sub.add_parser("total", help="print totals of recorded runs")
    tot.add_argument("records", nargs="+")
    tot.set_defaults(func=cmd_total)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
