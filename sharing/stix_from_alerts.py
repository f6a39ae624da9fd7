"""Alerts and joint incidents as STIX 2.1 objects, masked and marked, ready to leave.

What one alert becomes (all created with the stix2 library, all marked with a TLP 2.0
marking definition):

* `identity` of the department that saw it (the producer) and of the province's platform;
* `attack-pattern` per ATT&CK technique, referenced by its external id (`mitre-attack`,
  `T1110.001`), and the `course-of-action` objects MITRE relates to it (`mitigates`);
* `indicator` per shareable observable of the alert's entity (IPv4/IPv6 address, domain,
  URL, e-mail address, file hash): STIX pattern, `valid_from`/`valid_until`, confidence
  from the severity, kill-chain phases from the tactics, `indicates` the attack patterns;
* `observed-data` holding those observables as cyber-observable objects;
* `sighting` of each indicator (or of the technique when there is no observable) where the
  department saw it: `count`, `first_seen`, `last_seen`.

A joint incident adds an `incident`, a `course-of-action` per response task, `related-to`
relationships and a `report` bundling everything.

Leaving the platform, data is minimised and masked: addresses in private and internal
networks (the department's own hosts) never become indicators; an observable in which the
collectors' masking finds personal data (a user's e-mail address, a phone number in a URL) is
withheld, not masked, because a masked indicator matches nothing — only the senders of mail
(`email.from.address`, `email.sender.address`, `email.reply_to.address`) become e-mail
indicators; free text (names,
explanations, titles) is masked with every detector and the values of user fields are
replaced by keyed tokens. Ids and timestamps derive from the records, so exporting the same
alert twice gives identical objects, and an alert with new evidence gives a new version.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import stix2

from collectors.masking import Masker, TextMasker, masking_key
from detection.alerts import SEVERITIES
from detection.attack_catalogue import AttackCatalogue
from lianfang.settings import ALL_MASKING_DETECTORS, Settings
from sharing.attack_mitigations import MitigationCatalogue
from sharing.stix_identities import (
    Department,
    department_identity,
    department_identity_id,
    province_identity,
    province_identity_id,
)
from sharing.stix_ids import (
    REFERENCE_TIMESTAMP,
    deterministic_id,
    parse_stix_timestamp,
    stix_timestamp,
)
from sharing.tlp import TlpLevel, marking_definition, most_restrictive, parse_level

CONFIDENCE_BY_SEVERITY = {"low": 30, "medium": 50, "high": 70, "critical": 85}
HASH_NAMES = {"md5": "MD5", "sha1": "SHA-1", "sha256": "SHA-256", "sha512": "SHA-512"}
OBSERVABLE_TYPES = ("ipv4-addr", "ipv6-addr", "domain-name", "url", "email-addr", "file")
# Where an e-mail address names the sender of a (malicious) message rather than a person of the
# department: only these become e-mail indicators.
SENDER_FIELDS = ("email.from.address", "email.sender.address", "email.reply_to.address")
MAX_COUNT = 999_999_999  # STIX sighting counts stop there
# Networks that are never somebody else's indicator: the departments' own and special ranges.
# Documentation ranges (TEST-NET, 2001:db8::/32) are deliberately not listed: demos use them.
NON_SHAREABLE_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)


@dataclass(frozen=True)
class Observable:
    """A value from an alert that peers can look for: an address, domain, URL, e-mail or hash."""

    type: str  # one of OBSERVABLE_TYPES
    value: str
    field: str  # the ECS field it came from
    hash_name: str | None = None  # MD5, SHA-1, SHA-256, SHA-512 for files


@dataclass
class StixExport:
    """The objects made from one record, and what was left out and why."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    withheld: list[str] = field(default_factory=list)
    tlp: TlpLevel | None = None

    def add(self, stix_object: dict[str, Any]) -> None:
        """Keep one object (the same id twice keeps the newer version)."""
        current = self.objects.get(stix_object["id"])
        if current is None or stix_object.get("modified", "") >= current.get("modified", ""):
            self.objects[stix_object["id"]] = stix_object

    def merge(self, other: StixExport) -> None:
        """Take another export's objects and reasons."""
        for stix_object in other.objects.values():
            self.add(stix_object)
        self.withheld.extend(other.withheld)

    def of_type(self, object_type: str) -> list[dict[str, Any]]:
        """The objects of one type, in insertion order."""
        return [o for o in self.objects.values() if o["type"] == object_type]


def observable_from_field(ecs_field: str, value: Any) -> Observable | None:
    """The observable an ECS field holds, or None when the field holds none."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    leaf = ecs_field.rsplit(".", 1)[-1]
    if leaf == "ip" or ecs_field == "related.ip":
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return None
        kind = "ipv4-addr" if address.version == 4 else "ipv6-addr"
        return Observable(kind, str(address), ecs_field)
    if leaf == "domain" or ecs_field in ("dns.question.name", "tls.client.server_name"):
        name = text.lower().rstrip(".")
        if " " in name or "/" in name or "." not in name:
            return None
        return Observable("domain-name", name, ecs_field)
    if ecs_field in ("url.full", "url.original"):
        if "://" not in text:
            return None
        return Observable("url", text, ecs_field)
    if leaf in ("email", "address") and ("email" in ecs_field or ecs_field == "user.email"):
        if "@" not in text:
            return None
        return Observable("email-addr", text.lower(), ecs_field)
    if ".hash." in f".{ecs_field}" and leaf in HASH_NAMES:
        digest = text.lower()
        if not all(c in "0123456789abcdef" for c in digest):
            return None
        return Observable("file", digest, ecs_field, HASH_NAMES[leaf])
    return None


def stix_pattern(observable: Observable) -> str:
    """The STIX 2.1 pattern that matches the observable exactly."""
    value = observable.value.replace("\\", "\\\\").replace("'", "\\'")
    if observable.type == "file":
        return f"[file:hashes.'{observable.hash_name}' = '{value}']"
    return f"[{observable.type}:value = '{value}']"


def is_shareable_address(text: str, internal: Iterable[Any] = ()) -> bool:
    """An address outside private, special and configured internal networks."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    networks = (*NON_SHAREABLE_NETWORKS, *internal)
    return not any(address.version == n.version and address in n for n in networks)


def _is_personal_field(ecs_field: str) -> bool:
    parts = ecs_field.split(".")
    return "user" in parts or ecs_field.endswith((".email", ".full_name"))


def _marked(level: TlpLevel) -> list[str]:
    return [marking_definition(level).id]


def _stix_dict(stix_object: Any) -> dict[str, Any]:
    return json.loads(stix_object.serialize())


def _tactic_phases(
    catalogue: AttackCatalogue, technique_ids: Iterable[str]
) -> list[dict[str, str]]:
    phases: list[dict[str, str]] = []
    for technique_id in technique_ids:
        technique = catalogue.find(technique_id)
        if technique is None:
            continue
        for tactic_id, _ in technique.tactics:
            tactic = catalogue.tactic(tactic_id)
            if tactic is None:
                continue
            phase = {"kill_chain_name": "mitre-attack", "phase_name": tactic.shortname}
            if phase not in phases:
                phases.append(phase)
    return phases


def _technique_url(technique_id: str) -> str:
    return f"https://attack.mitre.org/techniques/{technique_id.replace('.', '/')}/"


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


class StixProducer:
    """Turns stored alerts and incidents into STIX objects under the platform's policy."""

    def __init__(
        self,
        *,
        province_name: str,
        masker: Masker,
        catalogue: AttackCatalogue,
        mitigations: MitigationCatalogue,
        default_tlp: TlpLevel = TlpLevel.AMBER,
        department_tlp: Mapping[str, TlpLevel] | None = None,
        validity_days: Mapping[str, int] | None = None,
        internal_networks: Iterable[str] = (),
    ) -> None:
        self.province_name = province_name
        self.masker = masker
        self.catalogue = catalogue
        self.mitigations = mitigations
        self.default_tlp = default_tlp
        self.department_tlp = dict(department_tlp or {})
        self.validity_days = dict(validity_days or {})
        self.internal_networks = [ipaddress.ip_network(n, strict=False) for n in internal_networks]

    @classmethod
    def from_settings(cls, settings: Settings) -> StixProducer:
        """The producer the settings describe; raises MaskingKeyMissing without a masking key.

        Outgoing objects are always masked with every detector, whatever a department's
        ingest policy says: what leaves the platform gets the strictest treatment.
        """
        intel = settings.intel
        masker = Masker(TextMasker(masking_key(settings), ALL_MASKING_DETECTORS))
        return cls(
            province_name=intel.province_name,
            masker=masker,
            catalogue=AttackCatalogue.load(),
            mitigations=MitigationCatalogue.load(),
            default_tlp=parse_level(intel.default_tlp),
            department_tlp={k: parse_level(v) for k, v in intel.department_tlp.items()},
            validity_days=intel.validity_days,
            internal_networks=intel.internal_networks,
        )

    # ------------------------------------------------------------------ policy

    def tlp_for(self, department_id: str | None, requested: TlpLevel | None = None) -> TlpLevel:
        """The TLP of a department's records: the request, else the department's, else default."""
        if requested is not None:
            return requested
        if department_id and department_id in self.department_tlp:
            return self.department_tlp[department_id]
        return self.default_tlp

    def mask_text(self, text: str, personal_values: Iterable[str] = ()) -> str:
        """Free text masked with every detector, and known personal values tokenised."""
        for value in sorted({v for v in personal_values if v}, key=len, reverse=True):
            if len(value) >= 3:
                text = text.replace(value, self.masker.text.redact(value))
        return self.masker.text.mask(text)

    def shareable(self, observable: Observable) -> str | None:
        """Why an observable may not leave (None when it may)."""
        if observable.type in ("ipv4-addr", "ipv6-addr"):
            if not is_shareable_address(observable.value, self.internal_networks):
                return f"{observable.field}={observable.value}: internal or special address"
            return None
        if observable.type == "file":
            return None  # digests are not personal data
        if observable.type == "email-addr" and observable.field in SENDER_FIELDS:
            return None  # the sender of a malicious mail, not a person of the department
        if _is_personal_field(observable.field) or observable.type == "email-addr":
            return f"{observable.field}: personal data is not shared"
        if self.masker.text.mask(observable.value) != observable.value:
            return f"{observable.field}: holds personal data"
        return None

    # ------------------------------------------------------------------ references

    def reference_objects(self, department: Department) -> StixExport:
        """The marking definitions and identities every export carries."""
        export = StixExport()
        clear = _marked(TlpLevel.CLEAR)
        export.add(_stix_dict(marking_definition(TlpLevel.CLEAR)))
        export.add(province_identity(self.province_name, clear))
        export.add(department_identity(department, self.province_name, clear))
        return export

    def attack_pattern_objects(self, technique_id: str) -> StixExport:
        """The technique as an attack pattern, with MITRE's mitigations of it."""
        export = StixExport()
        technique = self.catalogue.find(technique_id)
        if technique is None:
            export.withheld.append(f"{technique_id}: not an ATT&CK technique")
            return export
        clear = _marked(TlpLevel.CLEAR)
        pattern_id = deterministic_id("attack-pattern", "mitre-attack", technique.id)
        attack_pattern = stix2.v21.AttackPattern(
            id=pattern_id,
            created=REFERENCE_TIMESTAMP,
            modified=REFERENCE_TIMESTAMP,
            name=technique.name,
            description=f"MITRE ATT&CK technique {technique.id}: {technique.name}",
            external_references=[
                {
                    "source_name": "mitre-attack",
                    "external_id": technique.id,
                    "url": _technique_url(technique.id),
                }
            ],
            kill_chain_phases=_tactic_phases(self.catalogue, [technique.id]) or None,
            object_marking_refs=clear,
        )
        export.add(_stix_dict(attack_pattern))
        for mitigation in self.mitigations.for_technique(technique.id):
            coa_id = deterministic_id("course-of-action", "mitre-attack", mitigation.id)
            reference = {"source_name": "mitre-attack", "external_id": mitigation.id}
            if mitigation.url:
                reference["url"] = mitigation.url
            export.add(
                _stix_dict(
                    stix2.v21.CourseOfAction(
                        id=coa_id,
                        created=REFERENCE_TIMESTAMP,
                        modified=REFERENCE_TIMESTAMP,
                        name=mitigation.name,
                        description=mitigation.description or mitigation.name,
                        external_references=[reference],
                        object_marking_refs=clear,
                    )
                )
            )
            export.add(
                self._relationship(
                    coa_id, "mitigates", pattern_id, REFERENCE_TIMESTAMP, clear, None
                )
            )
        return export

    @staticmethod
    def _relationship(
        source: str,
        kind: str,
        target: str,
        timestamp: str,
        markings: list[str],
        created_by: str | None,
        created: str | None = None,
    ) -> dict[str, Any]:
        return _stix_dict(
            stix2.v21.Relationship(
                id=deterministic_id("relationship", source, kind, target),
                created=created or timestamp,
                modified=timestamp,
                created_by_ref=created_by,
                relationship_type=kind,
                source_ref=source,
                target_ref=target,
                object_marking_refs=markings,
            )
        )

    # ------------------------------------------------------------------ alerts

    def alert_observables(self, alert: Mapping[str, Any]) -> list[Observable]:
        """The observables an alert's entity names (its entity value and entity fields)."""
        entity = alert["alert"].get("entity") or {}
        candidates: list[tuple[str, Any]] = [(entity.get("type", ""), entity.get("value"))]
        candidates += list((entity.get("fields") or {}).items())
        found: list[Observable] = []
        for ecs_field, value in candidates:
            for item in _as_list(value):
                observable = observable_from_field(ecs_field, item)
                if observable is not None and observable not in found:
                    found.append(observable)
        return found

    def alert_objects(self, alert: Mapping[str, Any], tlp: TlpLevel | None = None) -> StixExport:
        """Everything an alert becomes; `withheld` names what could not be shared and why."""
        record = alert["alert"]
        organization = alert.get("organization") or {}
        department = Department(
            organization.get("id") or "unknown",
            organization.get("name"),
            (alert.get("labels") or {}).get("sector"),
        )
        level = self.tlp_for(department.id, tlp)
        markings = _marked(level)
        export = self.reference_objects(department)
        export.tlp = level
        export.add(_stix_dict(marking_definition(level)))
        producer = department_identity_id(department.id, self.province_name)
        created = stix_timestamp(record.get("created_at") or record["first_seen"])
        modified = max(created, stix_timestamp(record.get("updated_at") or created))
        first_seen = stix_timestamp(record["first_seen"])
        last_seen = stix_timestamp(record["last_seen"])
        severity = record.get("severity") if record.get("severity") in SEVERITIES else "medium"
        technique_ids = [
            t for t in _as_list((alert.get("threat") or {}).get("technique", {}).get("id")) if t
        ]
        pattern_ids: list[str] = []
        for technique_id in technique_ids:
            patterns = self.attack_pattern_objects(technique_id)
            export.merge(patterns)
            pattern_ids += [o["id"] for o in patterns.of_type("attack-pattern")]
        personal = self._personal_values(record)
        explanation = self.mask_text(str(record.get("explanation") or ""), personal)
        rule_name = self.mask_text(str((alert.get("rule") or {}).get("name") or "alert"), personal)
        phases = _tactic_phases(self.catalogue, technique_ids)

        observables = []
        for observable in self.alert_observables(alert):
            reason = self.shareable(observable)
            if reason is None:
                observables.append(observable)
            else:
                export.withheld.append(reason)

        sighted: list[str] = []
        observed_ref: list[str] = []
        if observables:
            scos = [self._observable_object(o, markings) for o in observables]
            for sco in scos:
                export.add(sco)
            observed = stix2.v21.ObservedData(
                id=deterministic_id("observed-data", record["id"]),
                created=created,
                modified=modified,
                created_by_ref=producer,
                first_observed=first_seen,
                last_observed=last_seen,
                number_observed=max(1, min(int(record.get("count") or 1), MAX_COUNT)),
                object_refs=[sco["id"] for sco in scos],
                object_marking_refs=markings,
            )
            export.add(_stix_dict(observed))
            observed_ref = [observed["id"]]
        for observable in observables:
            validity = timedelta(days=self.validity_days.get(observable.type, 30))
            indicator_id = deterministic_id("indicator", record["id"], stix_pattern(observable))
            indicator = stix2.v21.Indicator(
                id=indicator_id,
                created=created,
                modified=modified,
                created_by_ref=producer,
                name=f"{rule_name}: {observable.value}",
                description=explanation or rule_name,
                indicator_types=[
                    "malicious-activity"
                    if severity in ("high", "critical")
                    else "anomalous-activity"
                ],
                pattern=stix_pattern(observable),
                pattern_type="stix",
                pattern_version="2.1",
                valid_from=first_seen,
                valid_until=stix_timestamp(parse_stix_timestamp(last_seen) + validity),
                confidence=CONFIDENCE_BY_SEVERITY[severity],
                kill_chain_phases=phases or None,
                labels=[f"severity:{severity}", f"field:{observable.field}"],
                object_marking_refs=markings,
            )
            export.add(_stix_dict(indicator))
            sighted.append(indicator_id)
            for pattern_id in pattern_ids:
                export.add(
                    self._relationship(
                        indicator_id, "indicates", pattern_id, modified, markings, producer, created
                    )
                )
        if not sighted and pattern_ids:
            sighted = pattern_ids[:1]  # no shareable observable: the technique was sighted
        if not sighted:
            export.withheld.append(f"alert {record['id']}: no shareable observable or technique")
            return export
        for target in sighted:
            sighting = stix2.v21.Sighting(
                id=deterministic_id("sighting", record["id"], target),
                created=created,
                modified=modified,
                created_by_ref=producer,
                description=explanation or rule_name,
                sighting_of_ref=target,
                where_sighted_refs=[producer],
                observed_data_refs=observed_ref or None,
                count=max(1, min(int(record.get("count") or 1), MAX_COUNT)),
                first_seen=first_seen,
                last_seen=last_seen,
                object_marking_refs=markings,
            )
            export.add(_stix_dict(sighting))
        return export

    def _personal_values(self, record: Mapping[str, Any]) -> list[str]:
        entity = record.get("entity") or {}
        values: list[str] = []
        if _is_personal_field(str(entity.get("type", ""))):
            values += [str(v) for v in _as_list(entity.get("value"))]
        for ecs_field, value in (entity.get("fields") or {}).items():
            if _is_personal_field(ecs_field):
                values += [str(v) for v in _as_list(value)]
        return values

    def _observable_object(self, observable: Observable, markings: list[str]) -> dict[str, Any]:
        if observable.type == "ipv4-addr":
            sco: Any = stix2.v21.IPv4Address(value=observable.value, object_marking_refs=markings)
        elif observable.type == "ipv6-addr":
            sco = stix2.v21.IPv6Address(value=observable.value, object_marking_refs=markings)
        elif observable.type == "domain-name":
            sco = stix2.v21.DomainName(value=observable.value, object_marking_refs=markings)
        elif observable.type == "url":
            sco = stix2.v21.URL(value=observable.value, object_marking_refs=markings)
        elif observable.type == "email-addr":
            sco = stix2.v21.EmailAddress(value=observable.value, object_marking_refs=markings)
        else:
            sco = stix2.v21.File(
                hashes={observable.hash_name: observable.value}, object_marking_refs=markings
            )
        return _stix_dict(sco)

    def sighting_objects(
        self, alert: Mapping[str, Any], indicator_id: str, tlp: TlpLevel | None = None
    ) -> StixExport:
        """The sighting of someone's indicator that an intelligence-match alert stands for.

        Only counts, times and the sighting department leave: never the matched events.
        The sighting carries the indicator's TLP (or the department's when it has none).
        """
        record = alert["alert"]
        organization = alert.get("organization") or {}
        department = Department(
            organization.get("id") or "unknown",
            organization.get("name"),
            (alert.get("labels") or {}).get("sector"),
        )
        level = tlp or self.tlp_for(department.id)
        export = self.reference_objects(department)
        export.tlp = level
        export.add(_stix_dict(marking_definition(level)))
        producer = department_identity_id(department.id, self.province_name)
        created = stix_timestamp(record.get("created_at") or record["first_seen"])
        modified = max(created, stix_timestamp(record.get("updated_at") or created))
        export.add(
            _stix_dict(
                stix2.v21.Sighting(
                    id=deterministic_id("sighting", self.province_name, record["id"], indicator_id),
                    created=created,
                    modified=modified,
                    created_by_ref=producer,
                    sighting_of_ref=indicator_id,
                    where_sighted_refs=[producer],
                    count=max(1, min(int(record.get("count") or 1), MAX_COUNT)),
                    first_seen=stix_timestamp(record["first_seen"]),
                    last_seen=stix_timestamp(record["last_seen"]),
                    object_marking_refs=_marked(level),
                )
            )
        )
        return export

    # ------------------------------------------------------------------ incidents

    def incident_objects(
        self,
        incident_document: Mapping[str, Any],
        alerts: Iterable[Mapping[str, Any]],
        tlp: TlpLevel | None = None,
        departments: Mapping[str, Department] | None = None,
    ) -> StixExport:
        """A joint incident with its alerts' objects, its tasks, and a report bundling them.

        The incident carries the most restrictive TLP of its parts: an incident never
        leaks what one of its alerts may not share.
        """
        incident = incident_document["incident"]
        departments = dict(departments or {})
        lead = departments.get(incident["lead"], Department(incident["lead"]))
        export = self.reference_objects(lead)
        alert_exports = [self.alert_objects(alert, tlp) for alert in alerts]
        level = most_restrictive(
            [self.tlp_for(lead.id, tlp), *(e.tlp for e in alert_exports if e.tlp is not None)]
        )
        assert level is not None
        export.tlp = level
        markings = _marked(level)
        export.add(_stix_dict(marking_definition(level)))
        for alert_export in alert_exports:
            export.merge(alert_export)
        for participant in incident.get("participants") or ():
            department = departments.get(participant, Department(participant))
            export.add(department_identity(department, self.province_name, _marked(TlpLevel.CLEAR)))
        producer = department_identity_id(lead.id, self.province_name)
        created = stix_timestamp(incident["created_at"])
        modified = max(created, stix_timestamp(incident.get("updated_at") or created))
        technique_ids = [
            ref["external_id"]
            for o in export.of_type("attack-pattern")
            for ref in o.get("external_references", [])
            if ref.get("source_name") == "mitre-attack"
        ]
        incident_id = deterministic_id("incident", incident["id"])
        title = self.mask_text(str(incident.get("title") or "joint incident"))
        description = self.mask_text(str(incident.get("description") or "")) or title
        export.add(
            _stix_dict(
                stix2.v21.Incident(
                    id=incident_id,
                    created=created,
                    modified=modified,
                    created_by_ref=producer,
                    name=title,
                    description=description,
                    kill_chain_phases=_tactic_phases(self.catalogue, technique_ids) or None,
                    labels=[
                        f"severity:{incident.get('severity', 'medium')}",
                        f"status:{incident.get('status', 'new')}",
                    ],
                    object_marking_refs=markings,
                )
            )
        )
        for target in [
            *(o["id"] for o in export.of_type("attack-pattern")),
            *(o["id"] for o in export.of_type("indicator")),
        ]:
            export.add(
                self._relationship(
                    incident_id, "related-to", target, modified, markings, producer, created
                )
            )
        for task in incident.get("tasks") or ():
            task_id = deterministic_id(
                "course-of-action", "incident-task", incident["id"], task["id"]
            )
            task_created = stix_timestamp(task.get("created_at") or incident["created_at"])
            task_modified = max(task_created, stix_timestamp(task.get("done_at") or task_created))
            export.add(
                _stix_dict(
                    stix2.v21.CourseOfAction(
                        id=task_id,
                        created=task_created,
                        modified=task_modified,
                        created_by_ref=department_identity_id(
                            task["department"], self.province_name
                        ),
                        name=self.mask_text(str(task.get("title") or "response task")),
                        description=(
                            f"Joint-incident task for {task['department']}: {task.get('status', 'open')}"
                        ),
                        object_marking_refs=markings,
                    )
                )
            )
            export.add(
                self._relationship(
                    task_id,
                    "related-to",
                    incident_id,
                    task_modified,
                    markings,
                    producer,
                    task_created,
                )
            )
        refs = [
            object_id
            for object_id, stix_object in export.objects.items()
            if stix_object["type"] != "marking-definition"
        ]
        export.add(
            _stix_dict(
                stix2.v21.Report(
                    id=deterministic_id("report", incident["id"]),
                    created=created,
                    modified=modified,
                    created_by_ref=province_identity_id(self.province_name),
                    name=f"Joint incident: {title}",
                    description=description,
                    report_types=["threat-report"],
                    published=modified,
                    object_refs=refs,
                    object_marking_refs=markings,
                )
            )
        )
        return export


def make_bundle(objects: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A STIX bundle; its id derives from the objects' ids and versions (same objects, same id)."""
    items = [dict(o) for o in objects]
    key = sorted(f"{o['id']}|{o.get('modified', '')}" for o in items)
    return {"type": "bundle", "id": deterministic_id("bundle", *key), "objects": items}
