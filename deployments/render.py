"""Write the customer deployments of deployments/prefect.yaml from deployments/customers/*.yaml.

The profiles are the single source of truth: everything between the GENERATED markers in
prefect.yaml is rewritten from them; the rest of prefect.yaml is edited by hand.

    python deployments/render.py            # rewrite deployments/prefect.yaml
    python deployments/render.py --check    # exit 1 if prefect.yaml is out of date (CI, tests)
    python deployments/render.py --profiles DIR --output FILE   # e.g. a test's own profiles
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
BEGIN = "  # >>> BEGIN GENERATED customer deployments (python deployments/render.py) >>>"
END = "  # <<< END GENERATED customer deployments <<<"


def render_block(profiles_directory: str | Path | None = None) -> str:
    """The generated deployments (YAML list items, indented to sit under `deployments:`)."""
    from cusprun.pipeline.profiles import deployment_entry, validate_profiles

    lines = [BEGIN]
    for profile in validate_profiles(profiles_directory):
        lines.append(f"  # from {profile.path.name}")
        text = yaml.safe_dump([deployment_entry(profile)], sort_keys=False, width=100,
                              default_flow_style=None,
                              allow_unicode=True)
        lines += ["  " + line if line else line for line in text.rstrip("\n").split("\n")]
    lines.append(END)
    return "\n".join(lines)


def render_file(text: str, profiles_directory: str | Path | None = None) -> str:
    """`text` (a prefect.yaml) with its generated block replaced."""
    if BEGIN not in text or END not in text:
        from cusprun.errors import SpecError

        raise SpecError(f"The template lacks the generated-deployments markers {BEGIN.strip()!r} "
                        f"and {END.strip()!r}; put them at the end of its `deployments:` list.")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + render_block(profiles_directory) + tail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", help="profiles directory (default: $CUSPRUN_PROFILES or "
                                       "deployments/customers)")
    ap.add_argument("--template", default=str(HERE / "prefect.yaml"),
                    help="prefect.yaml to read (default: deployments/prefect.yaml)")
    ap.add_argument("--output", help="where to write (default: the template itself)")
    ap.add_argument("--check", action="store_true", help="only report whether it is up to date")
    args = ap.parse_args(argv)

    from cusprun.errors import CusprunError

    template = Path(args.template)
    try:
        current = template.read_text()
    except OSError as e:
        print(f"error: Cannot read template {str(template)!r}: {e.strerror or e}", file=sys.stderr)
        return 2
    try:
        rendered = render_file(current, args.profiles)
    except CusprunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    yaml.safe_load(rendered)  # never write a file Prefect cannot parse
    out = Path(args.output) if args.output else template
    if args.check:
        existing = out.read_text() if out.exists() else ""
        if existing != rendered:
            print(f"{out} is out of date with the profiles: run python deployments/render.py",
                  file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.write_text(rendered)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
