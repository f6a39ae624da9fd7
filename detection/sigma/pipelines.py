"""The pySigma processing pipeline for a rule's log source: ECS Windows, ECS Linux, or none.

Windows rules (product `windows`, any service or category) get, in priority order:

1. pySigma's `windows-logsources` (pysigma-pipeline-windows): PowerShell categories
   (`ps_script`, `ps_module`, ...) become their channel and event id;
2. `category_events`: a generic category is narrowed to the events that carry it, with the
   Sysmon event ids of pysigma-pipeline-sysmon, and Security 4688 next to Sysmon 1 for
   `process_creation` (our windows format fills the same process.* fields from both), so a
   process-creation rule does not fire on a network or image-load event with the same Image;
3. `raw_event_data`: these comparisons go to the raw `winlog.event_data.<Field>`
   string instead of the ECS field. An IP field compared with a wildcard
   (`DestinationIp|startswith: '10.'`), because Elasticsearch `ip` fields take exact values
   and CIDR ranges but silently match nothing for wildcards; and the placeholder `'-'`
   (`WorkstationName: '-'`, `IpAddress: '-'`), which Windows writes for "none" and which
   our windows format keeps in the event data but never copies into an ECS field; Sysmon's
   `'?'` for unknown PE metadata (`Description: '\\?'`) likewise. And the fields whose
   ecs_windows target holds something else than what Windows wrote (RAW_EVENT_DATA_FIELDS):
   Sigma's `User`, which rules match as Windows writes it (`User|contains: 'AUTHORI'` for
   `NT AUTHORITY\\SYSTEM`) while ECS splits it into user.domain and user.name; the subject
   and target account fields, which ecs_windows sends to user.* and winlog.logon.id although
   those hold the *target* account of a logon (4624) and the subject elsewhere; the full
   `ParentProcessName` path (ECS keeps the file name); and Sysmon's `'true'`/`'false'`
   (`Signed`, `Initiated`, ...), which ECS turns into booleans or `egress`/`ingress` that a
   string comparison never matches. Sigma's
   `Data` (the text of unnamed <Data> elements) is matched on `param1`..`param3`, the
   names Winlogbeat and our windows format give those elements. Sysmon's `Hashes`
   (`Hashes|contains: 'IMPHASH=...'`) is split into the lower-case ECS hash fields our
   format fills (process.hash.*, file.hash.*, *.pe.imphash), matched as exact terms:
   SigmaHQ's driver rules list thousands of hashes, which as regexes took 20 s a run;
4. pySigma-backend-elasticsearch's `ecs_windows` (Winlogbeat >= 7 field names);
5. `lianfang_fields`: the two differences between Elastic's index mappings and ours. Elastic
   adds lower-cased `.caseless` sub-fields; we have none and match case-insensitively in the
   query instead (see lucene_backend), so `.caseless` is dropped. Fields our schema maps as
   `text` (process.command_line, ...) are matched on their `.keyword` sub-field, since a
   wildcard on analysed text matches single tokens, not the whole value.

Linux rules use `linux_ecs`, a documented field mapping onto what our `auditd` and `syslog`
formats produce (pySigma has no ECS Linux pipeline):

| Sigma field | ECS field | note |
|---|---|---|
| type | auditd.log.record_type | |
| key | auditd.log.key | |
| SYSCALL, syscall | auditd.log.syscall | |
| exe, Image | process.executable | |
| comm | process.name | |
| proctitle | process.title | |
| cwd, CurrentDirectory | process.working_directory | |
| pid, ppid | process.pid, process.parent.pid | |
| uid, auid, euid | user.id, user.audit.id, user.effective.id | |
| a0 ... a9 | process.args | the argument's position is not kept: any position matches |
| name (PATH records) | file.path | |
| CommandLine, ParentImage, ParentCommandLine | process.command_line (.keyword), process.parent.* | |
| User, LogonId | user.name, auditd.log.ses | |
| other fields | auditd.log.<field> | as the auditd format stores them |

Linux services narrow the events: `auditd` to `event.dataset: auditd.log`; `auth`, `sshd`,
`sudo`, `cron`, `syslog` to the syslog dataset (and the program for the last four);
category `process_creation` to `event.category: process`. Keyword searches (values without
a field) look in `message`.

Product-less network categories use `network_ecs`: `dns` (`query`, as SigmaHQ's DNS rules
name the queried domain) and `firewall` (`src_ip`, `dst_ip`, `src_port`, `dst_port`) map
onto the ECS fields every network source of ours fills: Sysmon 22 and Zeek/Suricata DNS
give dns.question.name; Sysmon 3, Security 5156, firewall, Zeek and Suricata logs give
source.* and destination.*. A rule of these categories testing any other field is refused
(conversion-error naming the field), never run on a field no event has.

| Sigma field | ECS field |
|---|---|
| query | dns.question.name |
| answer | dns.answers.data |
| record_type | dns.question.type |
| src_ip, dst_ip | source.ip, destination.ip |
| src_port, dst_port | source.port, destination.port |

Every other product (cloud, web, macos, ...) and the other product-less categories
(`webserver`, `proxy`, `antivirus`: fields no format of ours produces) have no pipeline
here: such rules are reported as unsupported-logsource.
"""

from __future__ import annotations

from sigma.pipelines.elasticsearch.windows import ecs_windows
from sigma.pipelines.sysmon.sysmon import sysmon_generic_logsource_eventid_mapping
from sigma.pipelines.windows.windows import windows_logsource_pipeline
from sigma.processing.conditions import (
    ContainsWildcardCondition,
    IncludeFieldCondition,
    LogsourceCondition,
    MatchStringCondition,
)
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import (
    AddConditionTransformation,
    AddFieldnamePrefixTransformation,
    DetectionItemFailureTransformation,
    FieldMappingTransformation,
    HashesFieldsDetectionItemTransformation,
)
from sigma.rule import SigmaLogSource

from lianfang.schema import ECS_FIELDS

SYSMON_CHANNEL = "Microsoft-Windows-Sysmon/Operational"
SECURITY_CHANNEL = "Security"
# Sigma's names for event-data IP fields (Sysmon, Security, Windows Firewall).
WINDOWS_IP_FIELDS = (
    "SourceIp",
    "DestinationIp",
    "IpAddress",
    "ClientAddress",
    "SourceAddress",
    "DestAddress",
)
# Sigma's `Data` is the text of unnamed <Data> elements (classic PowerShell 400/600/800,
# application logs), which Winlogbeat and our windows format name param1, param2, ...
CLASSIC_DATA_FIELDS = [f"winlog.event_data.param{index}" for index in (1, 2, 3)]
# Sigma fields matched on the raw event-data string instead of ecs_windows's ECS target,
# because that target does not hold what Windows wrote in every event that has the field.
RAW_EVENT_DATA_FIELDS = (
    # user.name is the account the rule means only in some events (ECS: the target of a
    # logon, the subject elsewhere); Windows writes `DOMAIN\\name` in one string.
    "User",
    "SubjectUserName",
    "SubjectDomainName",
    "SubjectUserSid",
    "SubjectLogonId",
    "TargetDomainName",
    "TargetLogonId",
    "AccountName",
    "AccountDomain",
    # Security 4688 writes the parent's full path; process.parent.name is its file name.
    "ParentProcessName",
    # Sysmon writes 'true'/'false'; ECS holds booleans or egress/ingress.
    "Signed",
    "Initiated",
    "IsExecutable",
    "Archived",
)
# Windows' "nothing here" values: '-' (Security) and '?' (Sysmon's unknown PE metadata).
# Rules match on them; our windows format keeps them in the event data only. As
# MatchStringCondition sees them: a plain '-', and '\\?' (an escaped, literal question mark).
PLACEHOLDER_VALUE = r"^(?:-|\\\?)$"
# Sysmon's `Hashes` ("SHA1=...,MD5=...,IMPHASH=...") is split by our windows format into
# lower-case ECS hash fields: the process's for process creation, the file's otherwise.
HASH_FIELDS = {
    "process": {
        "MD5": "process.hash.md5",
        "SHA1": "process.hash.sha1",
        "SHA256": "process.hash.sha256",
        "IMPHASH": "process.pe.imphash",
    },
    "file": {
        "MD5": "file.hash.md5",
        "SHA1": "file.hash.sha1",
        "SHA256": "file.hash.sha256",
        "IMPHASH": "file.pe.imphash",
    },
}
LOWER_CASE_FIELDS = frozenset([*HASH_FIELDS["process"].values(), *HASH_FIELDS["file"].values()])
# ecs_windows targets Elastic's lower-cased sub-fields; our index has the plain fields.
CASELESS_FIELDS = {
    "process.executable.caseless": "process.executable",
    "process.parent.executable.caseless": "process.parent.executable",
    "process.parent.name.caseless": "process.parent.name",
}

LINUX_FIELDS = {
    "type": "auditd.log.record_type",
    "key": "auditd.log.key",
    "SYSCALL": "auditd.log.syscall",
    "syscall": "auditd.log.syscall",
    "exe": "process.executable",
    "Image": "process.executable",
    "comm": "process.name",
    "proctitle": "process.title",
    "cwd": "process.working_directory",
    "CurrentDirectory": "process.working_directory",
    "pid": "process.pid",
    "ppid": "process.parent.pid",
    "uid": "user.id",
    "auid": "user.audit.id",
    "euid": "user.effective.id",
    "name": "file.path",
    "CommandLine": "process.command_line",
    "ParentImage": "process.parent.executable",
    "ParentCommandLine": "process.parent.command_line",
    "User": "user.name",
    "LogonId": "auditd.log.ses",
    **{f"a{index}": "process.args" for index in range(10)},
}
LINUX_SYSLOG_SERVICES = {"auth": None, "sshd": "sshd", "sudo": "sudo", "cron": "cron"}
# Product-less network categories and their fields (network_ecs_pipeline).
NETWORK_FIELDS = {
    "dns": {
        "query": "dns.question.name",
        "answer": "dns.answers.data",
        "record_type": "dns.question.type",
    },
    "firewall": {
        "src_ip": "source.ip",
        "dst_ip": "destination.ip",
        "src_port": "source.port",
        "dst_port": "destination.port",
    },
}


class UnsupportedLogsource(ValueError):
    """No processing pipeline maps this log source onto the fields Lianfang stores."""

    def __init__(self, logsource: SigmaLogSource) -> None:
        described = ", ".join(
            f"{key}={value}"
            for key, value in (
                ("product", logsource.product),
                ("category", logsource.category),
                ("service", logsource.service),
            )
            if value
        )
        super().__init__(f"no ECS pipeline for log source {described or '(empty)'}")
        self.logsource = logsource


def pipeline_name(logsource: SigmaLogSource) -> str:
    """`windows`, `linux`, `network`, or raises UnsupportedLogsource."""
    product = (logsource.product or "").lower()
    if product in ("windows", "linux"):
        return product
    category = (logsource.category or "").lower()
    if not product and not logsource.service and category in NETWORK_FIELDS:
        return "network"
    raise UnsupportedLogsource(logsource)


def build_pipeline(name: str) -> ProcessingPipeline:
    """The complete processing pipeline of one kind (`windows` or `linux`)."""
    if name == "windows":
        return (
            windows_logsource_pipeline()
            + category_events_pipeline()
            + raw_event_data_pipeline()
            + ecs_windows()
            + lianfang_fields_pipeline("windows")
        )
    if name == "linux":
        return linux_ecs_pipeline() + lianfang_fields_pipeline("linux")
    if name == "network":
        return network_ecs_pipeline()
    raise ValueError(f"unknown pipeline {name!r}")


def category_events_pipeline() -> ProcessingPipeline:
    """Generic Windows categories narrowed to the Sysmon (and Security) events that carry them."""
    items = []
    for category, event_ids in sysmon_generic_logsource_eventid_mapping.items():
        ids = event_ids if isinstance(event_ids, list) else [event_ids]
        channels = [SYSMON_CHANNEL]
        if category == "process_creation":
            ids = [*ids, 4688]
            channels.append(SECURITY_CHANNEL)
        items.append(
            ProcessingItem(
                identifier=f"lianfang_{category}_events",
                transformation=AddConditionTransformation(
                    {"EventID": ids, "Channel": channels if len(channels) > 1 else channels[0]}
                ),
                rule_conditions=[LogsourceCondition(category=category, product="windows")],
            )
        )
    return ProcessingPipeline(
        name="Lianfang: Windows categories to events", priority=10, items=items
    )


def raw_event_data_pipeline() -> ProcessingPipeline:
    """Wildcard IP comparisons, placeholders and RAW_EVENT_DATA_FIELDS go to the raw event data."""
    return ProcessingPipeline(
        name="Lianfang: raw event data for IP patterns, placeholders and accounts",
        priority=15,
        items=[
            ProcessingItem(
                identifier="lianfang_hashes",
                transformation=HashesFieldsDetectionItemTransformation(
                    valid_hash_algos=list(HASH_FIELDS["file"])
                ),
                field_name_conditions=[IncludeFieldCondition(fields=["Hashes", "Hash"])],
                rule_conditions=[LogsourceCondition(product="windows")],
            ),
            ProcessingItem(
                identifier="lianfang_process_hashes",
                transformation=FieldMappingTransformation(HASH_FIELDS["process"]),
                rule_conditions=[
                    LogsourceCondition(product="windows", category="process_creation")
                ],
            ),
            ProcessingItem(
                identifier="lianfang_file_hashes",
                transformation=FieldMappingTransformation(HASH_FIELDS["file"]),
                rule_conditions=[LogsourceCondition(product="windows")],
            ),
            ProcessingItem(
                identifier="lianfang_raw_fields",
                transformation=FieldMappingTransformation(
                    {
                        **{name: f"winlog.event_data.{name}" for name in RAW_EVENT_DATA_FIELDS},
                        "Data": CLASSIC_DATA_FIELDS,
                    }
                ),
                rule_conditions=[LogsourceCondition(product="windows")],
            ),
            ProcessingItem(
                identifier="lianfang_raw_placeholder",
                transformation=AddFieldnamePrefixTransformation("winlog.event_data."),
                field_name_conditions=[IncludeFieldCondition(fields=[r"\w+"], mode="re")],
                detection_item_conditions=[
                    MatchStringCondition(cond="any", pattern=PLACEHOLDER_VALUE)
                ],
                rule_conditions=[LogsourceCondition(product="windows")],
            ),
            ProcessingItem(
                identifier="lianfang_raw_ip_patterns",
                transformation=AddFieldnamePrefixTransformation("winlog.event_data."),
                field_name_conditions=[IncludeFieldCondition(fields=list(WINDOWS_IP_FIELDS))],
                detection_item_conditions=[ContainsWildcardCondition(cond="any")],
                rule_conditions=[LogsourceCondition(product="windows")],
            ),
        ],
    )


def text_field_targets() -> dict[str, str]:
    """Schema fields mapped as analysed text, to their exact `.keyword` sub-field."""
    return {name: f"{name}.keyword" for name, kind in ECS_FIELDS.items() if kind == "text"}


def lianfang_fields_pipeline(product: str) -> ProcessingPipeline:
    """ECS field names as Elastic's mappings have them, to the fields our index has."""
    return ProcessingPipeline(
        name="Lianfang: index field names",
        priority=30,
        items=[
            ProcessingItem(
                identifier="lianfang_caseless",
                transformation=FieldMappingTransformation(CASELESS_FIELDS),
                rule_conditions=[LogsourceCondition(product=product)],
            ),
            ProcessingItem(
                identifier="lianfang_text_keyword",
                transformation=FieldMappingTransformation(text_field_targets()),
                rule_conditions=[LogsourceCondition(product=product)],
            ),
        ],
    )


def linux_ecs_pipeline() -> ProcessingPipeline:
    """Sigma's Linux field names onto our auditd and syslog ECS documents."""
    items = [
        ProcessingItem(
            identifier="lianfang_linux_auditd_events",
            transformation=AddConditionTransformation({"event.dataset": "auditd.log"}),
            rule_conditions=[LogsourceCondition(product="linux", service="auditd")],
        ),
        ProcessingItem(
            identifier="lianfang_linux_process_creation_events",
            transformation=AddConditionTransformation({"event.category": "process"}),
            rule_conditions=[LogsourceCondition(product="linux", category="process_creation")],
        ),
    ]
    for service, program in LINUX_SYSLOG_SERVICES.items():
        condition: dict[str, str | int | list[str]] = {"event.dataset": "syslog"}
        if program:
            condition["process.name"] = program
        items.append(
            ProcessingItem(
                identifier=f"lianfang_linux_{service}_events",
                transformation=AddConditionTransformation(condition),
                rule_conditions=[LogsourceCondition(product="linux", service=service)],
            )
        )
    items.append(
        ProcessingItem(
            identifier="lianfang_linux_syslog_events",
            transformation=AddConditionTransformation({"event.dataset": "syslog"}),
            rule_conditions=[LogsourceCondition(product="linux", service="syslog")],
        )
    )
    items.append(
        ProcessingItem(
            identifier="lianfang_linux_fields",
            transformation=FieldMappingTransformation(LINUX_FIELDS),
            rule_conditions=[LogsourceCondition(product="linux")],
        )
    )
    items.append(
        ProcessingItem(
            identifier="lianfang_linux_auditd_prefix",
            transformation=AddFieldnamePrefixTransformation("auditd.log."),
            field_name_conditions=[
                IncludeFieldCondition(fields=[r".*\..*"], mode="re")  # already an ECS name
            ],
            field_name_condition_negation=True,
            rule_conditions=[LogsourceCondition(product="linux", service="auditd")],
        )
    )
    return ProcessingPipeline(name="Lianfang: Linux ECS (auditd, syslog)", priority=20, items=items)


def network_ecs_pipeline() -> ProcessingPipeline:
    """Product-less `dns` and `firewall` rules onto ECS network fields; other fields refused."""
    items = []
    for category, fields in NETWORK_FIELDS.items():
        items.append(
            ProcessingItem(
                identifier=f"lianfang_network_{category}_fields",
                transformation=FieldMappingTransformation(fields),
                rule_conditions=[LogsourceCondition(category=category)],
            )
        )
        items.append(
            ProcessingItem(
                identifier=f"lianfang_network_{category}_unknown_field",
                transformation=DetectionItemFailureTransformation(
                    f"category {category} (no product): only the fields "
                    f"{', '.join(fields)} have an ECS mapping"
                ),
                field_name_conditions=[IncludeFieldCondition(fields=list(fields.values()))],
                field_name_condition_negation=True,
                rule_conditions=[LogsourceCondition(category=category)],
            )
        )
    return ProcessingPipeline(name="Lianfang: network categories to ECS", priority=20, items=items)
