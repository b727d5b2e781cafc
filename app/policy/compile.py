"""Policy and Grant documents, once they pass the schema, compiled into model values
(app/policy/model.py), with every problem a schema cannot see: unique names and rule ids, path
patterns, anonymous rules, CEL expressions, time zones, grant windows. Each problem names its
file and line. One ``Compiler`` takes the documents of one directory.

One piece: the compiler's checks read one document's rules top to bottom, and splitting them
would spread one rule's story over modules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from app.decision import ACR_VALUE
from app.durations import parse_duration
from app.identity.confirmation import BINDINGS
from app.policy.cel import CelCompileError, CelCondition, compile_condition
from app.policy.model import (
    ANY_PATH,
    AuthRequirement,
    ClaimCondition,
    DeviceRequirement,
    Effect,
    EvidenceRequirement,
    Grant,
    LocationRequirement,
    Rule,
    Subject,
    TimeWindow,
    WorkloadRequirement,
)
from app.policy.normalize import normalize_host
from app.policy.posture import required_os_version
from app.policy.problem import Problem
from app.policy.schema import (
    API_VERSION,
    GRANT_KIND,
    KIND,
    TEST_KIND,
    Draft202012Validator,
    as_timestamp,
    at_key,
    plain_data,
    schema_errors,
    shown,
)
from app.policy.timewindow import parse_window
from app.shared import shared_names
from app.yamlsrc import Located, PathKey

DEFAULT_GRANT_MAX_DURATION = 8 * 3600.0

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What the configuration says about loading: the longest a grant may last (seconds), and
    the named networks (``evidence.networks``) rules may refer to (``None``: not checked, e.g.
    ``ztauthz policy check`` without a configuration)."""

    grant_max_duration: float = DEFAULT_GRANT_MAX_DURATION
    networks: frozenset[str] | None = None


def path_pattern_problem(pattern: str) -> str | None:
    """Why a path pattern is invalid, or ``None`` if it is valid."""
    if not pattern.startswith("/"):
        return "a path pattern must start with '/'"
    if "%" in pattern or "?" in pattern:
        return (
            "'%' and '?' are not allowed: patterns match the decoded path without its query, "
            "so write characters literally"
        )
    if "\\" in pattern or _CONTROL.search(pattern):
        return "backslashes and control characters are not allowed"
    if pattern == "/":
        return None
    segments = pattern[1:].split("/")
    for position, segment in enumerate(segments):
        last = position == len(segments) - 1
        if segment == "" and last:
            return (
                f"remove the trailing '/': write {pattern[:-1]!r} "
                f"(requests for {pattern!r} match it too)"
            )
        if segment == "":
            return "empty segments ('//') are not allowed"
        if segment in (".", ".."):
            return "'.' and '..' segments are not allowed"
        if segment == "**" and not last:
            return "'**' is only allowed as the last segment"
        if "*" in segment and segment not in ("*", "**"):
            return f"'*' must be a whole segment ('*' or a final '**'), not part of {segment!r}"
    return None


def _sender_constraint(value: str | None) -> frozenset[str] | None:
    """``sender_constrained: dpop | mtls | any`` as the bindings it accepts (schema-checked)."""
    if value is None:
        return None
    return BINDINGS if value == "any" else frozenset({value})


def _subject(raw: Mapping[str, Any] | None) -> Subject | None:
    if raw is None:
        return None

    def names(key: str) -> frozenset[str] | None:
        return shared_names(frozenset(raw[key])) if key in raw else None

    claims = tuple(
        ClaimCondition(name, tuple(value) if isinstance(value, list) else (value,))
        for name, value in raw.get("claims", {}).items()
    )
    return Subject(
        issuers_any=names("issuers_any"),
        subjects_any=names("subjects_any"),
        groups_any=names("groups_any"),
        groups_all=names("groups_all"),
        scopes_any=names("scopes_any"),
        scopes_all=names("scopes_all"),
        claims=claims,
    )


@dataclass
class Compiler:
    validator: Draft202012Validator
    options: LoadOptions = field(default_factory=LoadOptions)
    problems: list[Problem] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    grants: list[Grant] = field(default_factory=list)
    documents: int = 0
    _policy_at: dict[str, str] = field(default_factory=dict)
    _rule_at: dict[str, str] = field(default_factory=dict)
    _grant_at: dict[str, str] = field(default_factory=dict)

    def error(self, file: str, line: int, message: str) -> None:
        self.problems.append(Problem(file, line, message))

    def _error_at(self, doc: Located, path: PathKey, message: str) -> None:
        self.error(doc.file, doc.line_of(path), at_key(path, message))

    def add(self, doc: Located) -> None:
        data = doc.data
        if isinstance(data, Mapping) and data.get("kind") == GRANT_KIND:
            data = plain_data(data)  # unquoted YAML timestamps are fine for not_before/expires
        if data is None:
            return  # an empty document, e.g. after a trailing "---"
        self.documents += 1
        if not isinstance(data, Mapping):
            self.error(
                doc.file,
                doc.start_line,
                "a policy document must be a mapping with apiVersion, kind, metadata and spec",
            )
            return
        if not self._check_schema(doc, data):
            return
        if data["kind"] == GRANT_KIND:
            self._grant(doc, data)
            return
        name: str = data["metadata"]["name"]
        where = f"{doc.file}:{doc.line_of(('metadata', 'name'))}"
        if name in self._policy_at:
            message = f"duplicate policy name {name!r}: also defined at {self._policy_at[name]}"
            self._error_at(doc, ("metadata", "name"), message)
            return
        self._policy_at[name] = where
        self.names.append(name)
        hosts = self._hosts(doc, data["spec"].get("hosts", []))
        dry_run = data["spec"].get("mode", "enforce") == "dry-run"
        high_risk: bool = data["spec"].get("high_risk", False)
        for position, raw in enumerate(data["spec"]["rules"]):
            self._rule(doc, name, hosts, ("spec", "rules", position), raw, dry_run, high_risk)

    def _check_schema(self, doc: Located, data: Mapping[str, Any]) -> bool:
        # A wrong apiVersion or kind makes every other complaint noise: report only that.
        if "apiVersion" in data and data["apiVersion"] != API_VERSION:
            message = (
                f"unsupported apiVersion {shown(data['apiVersion'])}; expected {API_VERSION!r}"
            )
            self._error_at(doc, ("apiVersion",), message)
            return False
        kind = data.get("kind")
        if kind == TEST_KIND:
            message = "PolicyTest documents belong in a file named *_test.yaml"
            self._error_at(doc, ("kind",), message)
            return False
        if "kind" in data and kind not in (KIND, GRANT_KIND):
            message = f"unsupported kind {shown(kind)}; expected {KIND!r} or {GRANT_KIND!r}"
            self._error_at(doc, ("kind",), message)
            return False
        found = schema_errors(self.validator, doc, data)
        self.problems.extend(found)
        return not found

    def _hosts(self, doc: Located, raw: list[str]) -> tuple[str, ...]:
        hosts: list[str] = []
        for position, host in enumerate(raw):
            wildcard = host.startswith("*.")
            try:
                name = normalize_host(host[2:] if wildcard else host)
            except ValueError as exc:
                self._error_at(doc, ("spec", "hosts", position), str(exc))
                continue
            hosts.append(f"*.{name}" if wildcard else name)
        return tuple(hosts)

    def _rule(
        self,
        doc: Located,
        policy: str,
        hosts: tuple[str, ...],
        base: PathKey,
        raw: Mapping[str, Any],
        dry_run: bool,
        policy_high_risk: bool = False,
    ) -> None:
        rule_id: str = raw["id"]
        line = doc.line_of((*base, "id"))
        if rule_id in self._rule_at:
            message = f"duplicate rule id {rule_id!r}: also defined at {self._rule_at[rule_id]}"
            self._error_at(doc, (*base, "id"), message)
        else:
            self._rule_at[rule_id] = f"{doc.file}:{line}"
        effect: Effect = raw["effect"]
        anonymous: bool = raw.get("anonymous", False)
        if anonymous and effect == "deny":
            message = (
                "only allow rules can be anonymous; a deny rule without subject already "
                "applies to everyone"
            )
            self._error_at(doc, (*base, "anonymous"), message)
        if anonymous and "subject" in raw:
            message = (
                "an anonymous rule needs no token, so it cannot have subject conditions; "
                "remove anonymous or subject"
            )
            self._error_at(doc, (*base, "anonymous"), message)
        if anonymous and "workload" in raw:
            message = (
                "a workload rule identifies the caller by its client certificate, so it cannot "
                "be anonymous; remove anonymous or workload"
            )
            self._error_at(doc, (*base, "anonymous"), message)
        if raw.get("high_risk") and (effect == "deny" or anonymous):
            message = (
                "only allow rules with a token can be high_risk: it asks the token's issuer "
                "to confirm the token before allowing"
            )
            self._error_at(doc, (*base, "high_risk"), message)
        # A rule's own high_risk wins over its policy's; the policy's applies to token rules.
        high_risk: bool = raw.get(
            "high_risk", policy_high_risk and effect == "allow" and not anonymous
        )
        for key in ("auth", "grant", "sender_constrained"):
            if key in raw and effect == "deny":
                message = f"only allow rules can have {key}: it decides who may be allowed"
                self._error_at(doc, (*base, key), message)
            elif key in raw and anonymous:
                message = f"an anonymous rule needs no token, so it cannot have {key}"
                self._error_at(doc, (*base, key), message)
        match: Mapping[str, Any] = raw.get("match", {})
        paths: list[str] = match.get("paths", [ANY_PATH])
        for position, pattern in enumerate(match.get("paths", [])):
            problem = path_pattern_problem(pattern)
            if problem is not None:
                self._error_at(doc, (*base, "match", "paths", position), problem)
        methods = shared_names(frozenset(match["methods"])) if "methods" in match else None
        self.rules.append(
            Rule(
                id=rule_id,
                policy=policy,
                effect=effect,
                order=len(self.rules),
                anonymous=anonymous,
                hosts=hosts,
                methods=methods,
                paths=tuple(paths),
                subject=_subject(raw.get("subject")),
                file=doc.file,
                line=line,
                time_window=self._time_window(doc, base, raw.get("time_window")),
                grant=raw.get("grant"),
                when=self._when(doc, base, raw.get("when")),
                auth=self._auth(doc, base, raw.get("auth")),
                dry_run=dry_run,
                evidence=self._evidence(doc, base, raw),
                sender_constrained=_sender_constraint(raw.get("sender_constrained")),
                high_risk=high_risk,
            )
        )

    def _evidence(
        self, doc: Located, base: PathKey, raw: Mapping[str, Any]
    ) -> EvidenceRequirement | None:
        device, location, workload = raw.get("device"), raw.get("location"), raw.get("workload")
        if device is None and location is None and workload is None:
            return None
        return EvidenceRequirement(
            device=None if device is None else self._device(doc, base, device),
            location=None if location is None else self._location(doc, base, location),
            workload=None
            if workload is None
            else WorkloadRequirement(
                spiffe_ids_any=_names_at(workload, "spiffe_ids_any"),
                trust_domains_any=_names_at(workload, "trust_domains_any"),
            ),
        )

    def _device(self, doc: Located, base: PathKey, raw: Mapping[str, Any]) -> DeviceRequirement:
        max_age: int | None = None
        if "max_posture_age" in raw:
            try:
                max_age = int(parse_duration(raw["max_posture_age"]).total_seconds())
            except ValueError as exc:
                self._error_at(doc, (*base, "device", "max_posture_age"), str(exc))
        versions: list[tuple[str, tuple[int, ...]]] = []
        for name, text in raw.get("min_os_version", {}).items():
            try:
                versions.append((name, required_os_version(text)))
            except ValueError as exc:
                self._error_at(doc, (*base, "device", "min_os_version", name), str(exc))
        max_risk = raw.get("max_risk")
        return DeviceRequirement(
            managed=raw.get("managed"),
            compliant=raw.get("compliant"),
            disk_encrypted=raw.get("disk_encrypted"),
            screen_lock=raw.get("screen_lock"),
            max_risk=None if max_risk is None else float(max_risk),
            max_posture_age=max_age,
            min_os_version=tuple(versions) if "min_os_version" in raw else None,
            sources_any=_names_at(raw, "sources_any"),
        )

    def _location(self, doc: Located, base: PathKey, raw: Mapping[str, Any]) -> LocationRequirement:
        known = self.options.networks
        for key in ("networks_any", "networks_none"):
            for position, name in enumerate(raw.get(key, [])):
                if known is not None and name not in known:
                    listed = ", ".join(sorted(known)) or "none"
                    message = (
                        f"unknown network {name!r}: evidence.networks in the configuration "
                        f"names {listed}"
                    )
                    self._error_at(doc, (*base, "location", key, position), message)
        return LocationRequirement(
            countries_any=_names_at(raw, "countries_any"),
            countries_none=_names_at(raw, "countries_none"),
            networks_any=_names_at(raw, "networks_any"),
            networks_none=_names_at(raw, "networks_none"),
            claim_matches_ip=bool(raw.get("claim_matches_ip", False)),
        )

    def _time_window(
        self, doc: Located, base: PathKey, raw: Mapping[str, Any] | None
    ) -> TimeWindow | None:
        if raw is None:
            return None
        try:
            return parse_window(raw["timezone"], raw.get("days"), raw.get("hours"))
        except ValueError as exc:
            key = "timezone" if "time zone" in str(exc) else "hours"
            self._error_at(doc, (*base, "time_window", key), str(exc))
            return None

    def _when(self, doc: Located, base: PathKey, source: str | None) -> CelCondition | None:
        if source is None:
            return None
        try:
            return compile_condition(source)
        except CelCompileError as exc:
            # Only a block scalar (when: | or >) keeps newlines; its text starts on the next line.
            line = doc.line_of((*base, "when")) + (1 if "\n" in source else 0)
            self.error(doc.file, line + exc.line - 1, at_key((*base, "when"), exc.message))
            return None

    def _auth(
        self, doc: Located, base: PathKey, raw: Mapping[str, Any] | None
    ) -> AuthRequirement | None:
        if raw is None:
            return None
        max_age: int | None = None
        if "max_age" in raw:
            try:
                max_age = int(parse_duration(raw["max_age"]).total_seconds())
            except ValueError as exc:
                self._error_at(doc, (*base, "auth", "max_age"), str(exc))
        for position, value in enumerate(raw.get("acr_any", [])):
            if ACR_VALUE.fullmatch(value) is None:
                message = (
                    "an acr value must be visible ASCII without spaces, quotes or backslashes "
                    "(it is sent back in the WWW-Authenticate challenge)"
                )
                self._error_at(doc, (*base, "auth", "acr_any", position), message)
        return AuthRequirement(
            acr_any=tuple(raw["acr_any"]) if "acr_any" in raw else None,
            amr_all=frozenset(raw["amr_all"]) if "amr_all" in raw else None,
            max_age=max_age,
        )

    def _grant(self, doc: Located, data: Mapping[str, Any]) -> None:
        name: str = data["metadata"]["name"]
        line = doc.line_of(("metadata", "name"))
        if name in self._grant_at:
            message = f"duplicate grant name {name!r}: also defined at {self._grant_at[name]}"
            self._error_at(doc, ("metadata", "name"), message)
            return
        self._grant_at[name] = f"{doc.file}:{line}"
        spec: Mapping[str, Any] = data["spec"]
        times: dict[str, float] = {}
        for key in ("not_before", "expires"):
            try:
                times[key] = as_timestamp(spec[key])
            except ValueError as exc:
                self._error_at(doc, ("spec", key), str(exc))
        if len(times) == 2:
            start, end = times["not_before"], times["expires"]
            longest = self.options.grant_max_duration
            if end <= start:
                self._error_at(doc, ("spec", "expires"), "must be later than not_before")
            elif end - start > longest:
                message = (
                    f"the grant lasts {_human(end - start)}, longer than the allowed maximum "
                    f"of {_human(longest)} (grants.max_duration)"
                )
                self._error_at(doc, ("spec", "expires"), message)
        if "subject" in spec and spec["approved_by"] == spec["subject"]:
            self._error_at(
                doc, ("spec", "approved_by"), "a grant cannot be approved by its grantee"
            )
        if len(times) != 2:
            return
        self.grants.append(
            Grant(
                name=name,
                not_before=times["not_before"],
                expires=times["expires"],
                approved_by=spec["approved_by"],
                reason=spec["reason"],
                subject=spec.get("subject"),
                group=spec.get("group"),
                issuer=spec.get("issuer"),
                grant=spec.get("grant"),
                groups=frozenset(spec.get("groups", ())),
                scopes=frozenset(spec.get("scopes", ())),
                ticket=spec.get("ticket"),
                file=doc.file,
                line=line,
            )
        )


def _names_at(raw: Mapping[str, Any], key: str) -> frozenset[str] | None:
    return frozenset(raw[key]) if key in raw else None


def _human(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))
