#!/usr/bin/env python3
"""The pilot: generate and judge identity videos for every combination of a plan's people,
prompts, seeds and settings, on one ComfyUI server or several.

    python tools/pilot.py PLAN --server http://127.0.0.1:8188 [--server URL ...] --out DIR

PLAN is a TOML (Python 3.11+) or JSON file; docs/pilot_plan.toml is a commented example. Each
job uploads the person's photo, queues the workflow (POST /prompt), follows it on the websocket,
downloads the video into DIR/videos/, scores it (identity similarity to the photo, motion) and
appends one line to DIR/results.jsonl. DIR/report.html and DIR/results.csv are rewritten at the
end. Running the same plan into the same DIR again queues only the jobs without a result.

Exit status: 0 when every job of the plan has a result; 1 when some failed or were not run
(the report lists why); 2 when the plan cannot be run as written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from engine.pilot import dispatch, plan as plan_mod, report  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("plan", help="the plan file (.toml or .json)")
    parser.add_argument("--server", action="append", default=[], metavar="URL",
                        help="a ComfyUI server (repeat for several); e.g. http://127.0.0.1:8188")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for videos, results and the report")
    parser.add_argument("--inflight", type=int, default=None,
                        help="jobs queued on each server at a time (plan's inflight, default 2)")
    parser.add_argument("--min-motion", type=float, default=None,
                        help="the report's best setting is the most faithful one moving at least this much "
                             "(plan's min_motion, default 0)")
    parser.add_argument("--no-score", action="store_true", help="record the videos without scoring them")
    parser.add_argument("--give-up-after", type=float, default=120.0, metavar="S",
                        help="stop when no server has answered for this long (the missing jobs stay for a re-run)")
    parser.add_argument("--report-only", action="store_true", help="rewrite report.html and results.csv, queue nothing")
    return parser.parse_args(argv)


def main(argv=None, stream=None) -> int:
    args = parse_args(argv)
    try:
        plan = plan_mod.load(args.plan, min_motion=args.min_motion)
    except plan_mod.PlanError as e:
        print(f"pilot: {e}", file=sys.stderr)
        return 2
    summary = {"jobs": len(plan.jobs), "failed": 0, "not_run": 0}
    if not args.report_only:
        if not args.server:
            print("pilot: give at least one --server URL (a running ComfyUI)", file=sys.stderr)
            return 2
        pilot = dispatch.Pilot(plan, args.server, args.out, inflight=args.inflight, score=not args.no_score,
                               give_up_after=args.give_up_after, stream=stream)
        try:
            summary = asyncio.run(pilot.run())
        except KeyboardInterrupt:
            report.write(args.out, plan, args.min_motion)
            done = len(dispatch.results.done(args.out))
            print(f"\npilot: interrupted; {done} of {len(plan.jobs)} jobs have a result. Run the same command again "
                  "to queue only the others (prompts already queued on a server still run there).", file=stream)
            return 130
        html_path, csv_path = report.write(args.out, plan, args.min_motion)
        print(f"pilot: {summary['jobs']} jobs, {summary['already_done']} already done, queued {summary['queued']}: "
              f"{summary['done']} done, {summary['failed']} failed, {summary['not_run']} not run in {summary['seconds']:.0f} s",
              file=stream)
    else:
        os.makedirs(args.out, exist_ok=True)
        html_path, csv_path = report.write(args.out, plan, args.min_motion)
    print(f"pilot: report {html_path}\npilot: table  {csv_path}", file=stream)
    missing = len(plan.jobs) - len([k for k in (j.key for j in plan.jobs) if k in dispatch.results.done(args.out)])
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
