"""Customer profiles: one YAML file per customer in deployments/customers/<name>.yaml.

A profile file is an ExpertSpec (the same fields as `cusprun build --spec`) plus three keys that
only concern scheduling: `schedule: {cron, timezone}`, `description` and `tags`. The file name is
the profile name; it is also the expert name (spec `name` may be omitted) and the name of its
Prefect deployment `build-expert/<name>`.

The directory is `CUSPRUN_PROFILES`, else deployments/customers next to this package (a source
checkout), else ./deployments/customers.
"""
from __future__ import annotations

import os
import re
import zoneinfo
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cusprun.errors import SpecError
from cusprun.pipeline.spec import ExpertSpec, load_spec, validation_message

PROFILE_KEYS = ("schedule", "description", "tags", "storage_block")
# Deployment names of the other flows: a profile with one of these names would collide.
RESERVED_NAMES = ("build-expert", "collect-stats", "rebuild-experts", "watch-base-models")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?LW#]+$")


class Schedule(BaseModel):
    """When the profile's expert is rebuilt (a standard 5-field cron line in an IANA time zone)."""

    model_config = ConfigDict(extra="forbid")
    cron: str = Field(description="e.g. '0 3 * * 1' (Mondays 03:00)")
    timezone: str = Field("UTC", description="IANA time zone, e.g. 'Europe/Paris'")

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        fields = v.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError(f"cron {v!r} must have 5 fields: minute hour day-of-month month "
                             "day-of-week, e.g. '0 3 * * 1'")
        return " ".join(fields)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"time zone {v!r} is not an IANA name such as 'UTC', "
                             "'Europe/Paris' or 'America/New_York'") from None
        return v


class Profile(BaseModel):
    """A validated customer profile."""

    model_config = ConfigDict(extra="forbid")
    name: str
    path: Path
    spec: ExpertSpec
    schedule: Schedule | None = None
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    storage_block: str | None = Field(None, description="Prefect JSON block with storage options "
                                                        "(S3 endpoint, credentials)")

    @property
    def deployment(self) -> str:
        """Full name of this profile's Prefect deployment."""
        return f"build-expert/{self.name}"

    @property
    def resource_id(self) -> str:
        """Prefect event resource id of this profile (related resource of watcher events)."""
        return f"cusprun.profile.{self.name}"


def profiles_dir(directory: str | os.PathLike | None = None) -> Path:
    """`directory`, else $CUSPRUN_PROFILES, else the checkout's deployments/customers."""
    if directory:
        return Path(directory)
    if os.environ.get("CUSPRUN_PROFILES"):
        return Path(os.environ["CUSPRUN_PROFILES"])
    checkout = Path(__file__).resolve().parents[2] / "deployments" / "customers"
    return checkout if checkout.is_dir() else Path("deployments") / "customers"


def list_profiles(directory: str | os.PathLike | None = None) -> list[str]:
    """Names of the profiles in the directory (sorted)."""
    d = profiles_dir(directory)
    if not d.is_dir():
        raise SpecError(f"Profile directory {str(d)!r} does not exist; set CUSPRUN_PROFILES or "
                        "pass the directory that holds <profile>.yaml files.")
    return sorted(p.stem for p in d.glob("*.yaml"))


def parse_profile(name: str, data: dict[str, Any], path: Path) -> Profile:
    """Validate a profile's YAML content (spec fields + schedule/description/tags)."""
    if not isinstance(data, dict):
        raise SpecError(f"Profile {str(path)!r} must be a YAML mapping of ExpertSpec fields plus "
                        f"{', '.join(PROFILE_KEYS)}.")
    if name in RESERVED_NAMES:
        raise SpecError(f"Profile name {name!r} is reserved (a deployment of that name exists); "
                        f"rename {str(path)!r}.")
    extra = {k: data.pop(k) for k in PROFILE_KEYS if k in data}
    data.setdefault("name", name)
    if data["name"] != name:
        raise SpecError(f"Profile {str(path)!r} sets name {data['name']!r}; a profile's expert "
                        f"name is its file name ({name!r}): drop `name` or rename the file.")
    try:
        spec = load_spec(data)
    except SpecError as e:
        raise SpecError(f"Profile {name!r} ({path}): {e}") from e
    from pydantic import ValidationError

    try:
        return Profile(name=name, path=path, spec=spec, **extra)
    except ValidationError as e:
        raise SpecError(validation_message(f"Profile {name!r} ({path})", e)) from e


def load_profile(name: str, directory: str | os.PathLike | None = None) -> Profile:
    """Load and validate one profile; an unknown name lists the profiles that exist."""
    import yaml

    d = profiles_dir(directory)
    path = d / f"{name}.yaml"
    if not path.is_file():
        have = list_profiles(d) if d.is_dir() else []
        raise SpecError(f"Unknown profile {name!r} in {str(d)!r}; profiles: "
                        f"{', '.join(have) or '(none)'}.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SpecError(f"Cannot read profile {str(path)!r}: {e}") from e
    return parse_profile(name, data, path)


def load_profiles(names: list[str] | None = None,
                  directory: str | os.PathLike | None = None) -> list[Profile]:
    """The named profiles (all when `names` is None), all validated before any is used."""
    return [load_profile(n, directory) for n in (list_profiles(directory) if names is None else names)]


def validate_profiles(directory: str | os.PathLike | None = None) -> list[Profile]:
    """Load every profile and check the bundled corpora they use; one error lists all problems."""
    profiles, problems = [], []
    for name in list_profiles(directory):
        try:
            profile = load_profile(name, directory)
        except SpecError as e:
            problems.append(str(e))
            continue
        profiles.append(profile)
        problems += [f"Profile {name!r}: {p}" for p in check_bundled_corpora(profile)]
    if len(problems) == 1:
        raise SpecError(f"Invalid customer profile: {problems[0]}")
    if problems:
        raise SpecError("Invalid customer profiles:\n  " + "\n  ".join(problems))
    return profiles


def check_bundled_corpora(profile: Profile) -> list[str]:
    """Problems with the bundled corpora a profile relies on (empty list: all available).

    Only dimensions without explicit `sources` use bundled corpora; this is the cheap registry
    check (no data is read)."""
    try:
        from cusprun.corpora.bundled import parse_bundled
    except ImportError:  # corpora not installed in this build: nothing to check against
        return []
    from cusprun.errors import CorpusError
    from cusprun.pipeline.plan_inputs import calibration_corpora, evaluation_corpora

    try:  # choosing the default bundled sources already checks the registry
        used = [(g, c["source"]) for g, cs in calibration_corpora(profile.spec).items() for c in cs]
        used += [(g, c["source"]) for g, c in evaluation_corpora(profile.spec).items()]
    except CorpusError as e:
        return [str(e)]
    problems = []
    for group, source in used:
        if source.startswith("bundled://"):
            try:
                parse_bundled(source)
            except CorpusError as e:
                problems.append(f"{group}: {e}")
    return problems


# Event that the watch-base-models flow emits and the customer deployments' triggers expect.
BASE_MODEL_UPDATED = "cusprun.base-model.updated"
BUILD_ENTRYPOINT = "flows/build.py:build_expert"


def deployment_entry(profile: Profile, work_pool: str = "cpu") -> dict[str, Any]:
    """The prefect.yaml deployment of a profile: its spec as parameters, its cron schedule, and a
    trigger that rebuilds it when the watcher reports a new revision of its base model (only for
    events the watcher marks `cusprun.rebuild: automation`, so a direct rebuild never doubles)."""
    entry: dict[str, Any] = {
        "name": profile.name,
        "description": profile.description or f"Customer expert {profile.name}",
        "tags": ["cusprun", *[t for t in profile.tags if t != "cusprun"]],
        "entrypoint": BUILD_ENTRYPOINT,
        "work_pool": {"name": work_pool},
        "concurrency_limit": 1,  # one build per customer at a time (schedule, nightly, trigger)
        "parameters": {"spec": profile.spec.model_dump(mode="json", exclude_unset=True),
                       **({"storage_block": profile.storage_block} if profile.storage_block else {})},
        "schedules": ([{"cron": profile.schedule.cron, "timezone": profile.schedule.timezone}]
                      if profile.schedule else []),
        "triggers": [{
            "type": "event",
            "name": f"rebuild {profile.name} on base-model update",
            "enabled": True,
            "expect": [BASE_MODEL_UPDATED],
            "match": {"prefect.resource.id": "cusprun.base-model.*",
                      "cusprun.rebuild": "automation"},
            "match_related": {"prefect.resource.role": "profile",
                              "prefect.resource.id": profile.resource_id},
            "posture": "Reactive",
            "threshold": 1,
            "within": 0,
        }],
    }
    return entry
