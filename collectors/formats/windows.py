"""Windows events (EVTX records, Winlogbeat JSON, flat JSON exports) to ECS in Winlogbeat's layout.

The Sigma ECS pipelines query the fields Winlogbeat and Elastic's Windows modules produce,
so every event keeps the Winlogbeat core (`winlog.channel`, `winlog.event_id` and
`event.code` as strings, `winlog.provider_name`, `winlog.record_id`, `winlog.computer_name`,
`winlog.event_data.*`, `winlog.user_data.*`) and gains the ECS fields Elastic's security,
sysmon, system and powershell pipelines add (process.*, user.*, source.*, destination.*,
file.*, registry.*, dns.*, service.*, winlog.logon.*, event.category/type/action/outcome).
Unlike those pipelines, the event data is copied, never moved: every EventData field stays
under `winlog.event_data` with its name as in the event.

Three record shapes are accepted (a text line is parsed as JSON first):
- the `evtx` package's JSON: `{"Event": {"System": {...}, "EventData": {...}}}` where XML
  attributes sit under `#attributes` and element text under `#text`;
- Winlogbeat / Elastic Agent JSON (already has `winlog`, nested or with dotted keys): kept
  as it is, with missing ECS fields filled in;
- flat exports: `Get-WinEvent | ConvertTo-Json` (Id, ProviderName, TimeCreated, unnamed
  Properties) and nxlog's im_msvistalog JSON (EventID, SourceName, EventTime, with the
  event data fields at the top level).

Quirks worth knowing:
- Event data values are stored as strings, as Windows renders them and Winlogbeat ships
  them ("true"/"false", decimal integers, "0x..." for hex types), so one field never gets
  two Elasticsearch types. Empty values are dropped; "-" is kept there because Sigma rules
  match on it, but never copied into an ECS field. Unnamed <Data> elements become
  param1, param2, ... (Winlogbeat's naming); UserData gets `xml_name` for its element, and
  an event without EventData (Windows writes one or the other) also has UserData's fields
  under `winlog.event_data`, where Sigma rules look for them by name.
- GUID-typed values come out of the evtx package without braces ("365ABB72-..."), where
  Windows renders "{365ABB72-...}"; they are kept as decoded.
- @timestamp is System/TimeCreated, not Sysmon's UtcTime. Flat exports without a zone
  (nxlog's EventTime) are read in the configured time zone.
- `user.id` comes from the System Security UserID only when the event data names no user,
  so that user.id and user.name never describe two different accounts, and never for
  Sysmon, whose UserID is always its own service account.
- Elastic's pipelines translate some codes to names; where Sigma rules match the raw
  value, the raw value is kept (Sysmon's QueryStatus in `sysmon.dns.status`, PowerShell
  4103's Payload in `powershell.file.script_block_text` as Sigma maps it).
- Get-WinEvent's Properties carry no names, so those events get param1..N and only the
  header-derived ECS fields; exports that include named EventData get the full mapping.
- Record markers from `collectors.inputs.evtx_file` (damaged EVTX data) are refused with
  the damage as the reason.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import UTC, datetime
from typing import Any

from collectors.inputs.evtx_file import EVTX_ERROR_KEY
from collectors.log_format import LogFormat, ParseContext, ParseError, Record
from lianfang.schema import format_timestamp, nest_dotted_keys

SECURITY = "security"
SYSMON = "sysmon"
SYSTEM = "system"
POWERSHELL = "powershell"
POWERSHELL_OPERATIONAL = "powershell_operational"

# Channel (lower case) -> (event.dataset, which enrichment applies).
KNOWN_CHANNELS = {
    "security": ("windows.security", SECURITY),
    "system": ("windows.system", SYSTEM),
    "application": ("windows.application", None),
    "microsoft-windows-sysmon/operational": ("windows.sysmon_operational", SYSMON),
    "windows powershell": ("windows.powershell", POWERSHELL),
    "microsoft-windows-powershell/operational": (
        "windows.powershell_operational",
        POWERSHELL_OPERATIONAL,
    ),
    "forwardedevents": ("windows.forwarded", None),
}
_NOT_NAME_CHARS = re.compile(r"[^a-z0-9]+")

# EVENT_DESCRIPTOR.Id is a USHORT.
MAX_EVENT_ID = 65535
# Event data is flat name/value pairs; UserData nests a little. Deeper is not an event.
MAX_VALUE_DEPTH = 16
# Elasticsearch's default mapping.depth.limit.
MAX_DOCUMENT_DEPTH = 20
LEVELS = {0: "information", 1: "critical", 2: "error", 3: "warning", 4: "information", 5: "verbose"}
# Standard opcodes from winmeta.xml; providers may define others, which stay unnamed.
OPCODES = {
    0: "Info",
    1: "Start",
    2: "Stop",
    3: "DCStart",
    4: "DCStop",
    7: "Extension",
    8: "Reply",
    9: "Resume",
    10: "Suspend",
    240: "Send",
    241: "Receive",
}
KEYWORD_AUDIT_FAILURE = 0x10000000000000
KEYWORD_AUDIT_SUCCESS = 0x20000000000000
KEYWORD_CLASSIC = 0x80000000000000

# Security audit subcategories, the Task of Security-Auditing events (winlog.task).
AUDIT_SUBCATEGORIES = {
    12288: "Security State Change", 12289: "Security System Extension", 12290: "System Integrity",
    12291: "IPsec Driver", 12292: "Other System Events", 12544: "Logon", 12545: "Logoff",
    12546: "Account Lockout", 12547: "IPsec Main Mode", 12548: "Special Logon",
    12549: "IPsec Quick Mode", 12550: "IPsec Extended Mode", 12551: "Other Logon/Logoff Events",
    12552: "Network Policy Server", 12553: "User / Device Claims", 12554: "Group Membership",
    12800: "File System", 12801: "Registry", 12802: "Kernel Object", 12803: "SAM",
    12804: "Other Object Access Events", 12805: "Certification Services",
    12806: "Application Generated", 12807: "Handle Manipulation", 12808: "File Share",
    12809: "Filtering Platform Packet Drop", 12810: "Filtering Platform Connection",
    12811: "Detailed File Share", 12812: "Removable Storage", 12813: "Central Policy Staging",
    13056: "Sensitive Privilege Use", 13057: "Non Sensitive Privilege Use",
    13058: "Other Privilege Use Events", 13312: "Process Creation", 13313: "Process Termination",
    13314: "DPAPI Activity", 13315: "RPC Events", 13316: "Plug and Play Events",
    13317: "Token Right Adjusted Events", 13568: "Audit Policy Change",
    13569: "Authentication Policy Change", 13570: "Authorization Policy Change",
    13571: "MPSSVC Rule-Level Policy Change", 13572: "Filtering Platform Policy Change",
    13573: "Other Policy Change Events", 13824: "User Account Management",
    13825: "Computer Account Management", 13826: "Security Group Management",
    13827: "Distribution Group Management", 13828: "Application Group Management",
    13829: "Other Account Management Events", 14080: "Directory Service Access",
    14081: "Directory Service Changes", 14082: "Directory Service Replication",
    14083: "Detailed Directory Service Replication", 14336: "Credential Validation",
    14337: "Kerberos Service Ticket Operations", 14338: "Other Account Logon Events",
    14339: "Kerberos Authentication Service",
}  # fmt: skip

# event.code -> (event.category, event.type, event.action), after Elastic's security module.
SECURITY_EVENTS: dict[str, tuple[list[str], list[str], str]] = {
    "1100": (["process"], ["end"], "logging-service-shutdown"),
    "1102": (["iam"], ["admin", "change"], "audit-log-cleared"),
    "1104": (["iam"], ["admin"], "logging-full"),
    "4616": (["configuration"], ["change"], "system-time-changed"),
    "4624": (["authentication"], ["start"], "logged-in"),
    "4625": (["authentication"], ["start"], "logon-failed"),
    "4634": (["authentication"], ["end"], "logged-out"),
    "4647": (["authentication"], ["end"], "logged-out"),
    "4648": (["authentication"], ["start"], "logged-in-explicit"),
    "4657": (["registry", "configuration"], ["change"], "registry-value-modified"),
    "4670": (["iam", "configuration"], ["admin", "change"], "permissions-changed"),
    "4672": (["iam"], ["admin"], "logged-in-special"),
    "4673": (["iam"], ["admin"], "privileged-service-called"),
    "4674": (["iam"], ["admin"], "privileged-operation"),
    "4688": (["process"], ["start"], "created-process"),
    "4689": (["process"], ["end"], "exited-process"),
    "4697": (["iam", "configuration"], ["admin", "change"], "service-installed"),
    "4698": (["iam", "configuration"], ["creation", "admin"], "scheduled-task-created"),
    "4699": (["iam", "configuration"], ["deletion", "admin"], "scheduled-task-deleted"),
    "4700": (["iam", "configuration"], ["change", "admin"], "scheduled-task-enabled"),
    "4701": (["iam", "configuration"], ["change", "admin"], "scheduled-task-disabled"),
    "4702": (["iam", "configuration"], ["change", "admin"], "scheduled-task-updated"),
    "4719": (["iam", "configuration"], ["admin", "change"], "changed-audit-config"),
    "4720": (["iam"], ["user", "creation"], "added-user-account"),
    "4722": (["iam"], ["user", "change"], "enabled-user-account"),
    "4723": (["iam"], ["user", "change"], "changed-password"),
    "4724": (["iam"], ["user", "change"], "reset-password"),
    "4725": (["iam"], ["user", "deletion"], "disabled-user-account"),
    "4726": (["iam"], ["user", "deletion"], "deleted-user-account"),
    "4727": (["iam"], ["group", "creation"], "added-group-account"),
    "4728": (["iam"], ["group", "change"], "added-member-to-group"),
    "4729": (["iam"], ["group", "change"], "removed-member-from-group"),
    "4730": (["iam"], ["group", "deletion"], "deleted-group-account"),
    "4731": (["iam"], ["group", "creation"], "added-group-account"),
    "4732": (["iam"], ["group", "change"], "added-member-to-group"),
    "4733": (["iam"], ["group", "change"], "removed-member-from-group"),
    "4734": (["iam"], ["group", "deletion"], "deleted-group-account"),
    "4735": (["iam"], ["group", "change"], "modified-group-account"),
    "4737": (["iam"], ["group", "change"], "modified-group-account"),
    "4738": (["iam"], ["user", "change"], "modified-user-account"),
    "4740": (["iam"], ["user", "change"], "locked-out-user-account"),
    "4741": (["iam"], ["creation", "admin"], "added-computer-account"),
    "4742": (["iam"], ["change", "admin"], "changed-computer-account"),
    "4743": (["iam"], ["deletion", "admin"], "deleted-computer-account"),
    "4754": (["iam"], ["group", "creation"], "added-group-account"),
    "4755": (["iam"], ["group", "change"], "modified-group-account"),
    "4756": (["iam"], ["group", "change"], "added-member-to-group"),
    "4757": (["iam"], ["group", "change"], "removed-member-from-group"),
    "4758": (["iam"], ["group", "deletion"], "deleted-group-account"),
    "4767": (["iam"], ["user", "change"], "unlocked-user-account"),
    "4768": (["authentication"], ["start"], "kerberos-authentication-ticket-requested"),
    "4769": (["authentication"], ["start"], "kerberos-service-ticket-requested"),
    "4770": (["authentication"], ["start"], "kerberos-service-ticket-renewed"),
    "4771": (["authentication"], ["start"], "kerberos-preauth-failed"),
    "4776": (["authentication"], ["start"], "credential-validated"),
    "4778": (["authentication", "session"], ["start"], "session-reconnected"),
    "4779": (["authentication", "session"], ["end"], "session-disconnected"),
    "4781": (["iam"], ["user", "change"], "renamed-user-account"),
    "4798": (["iam"], ["user", "info"], "group-membership-enumerated"),
    "4799": (["iam"], ["group", "info"], "user-member-enumerated"),
    "5140": (["network", "file"], ["access"], "network-share-accessed"),
    "5145": (["network", "file"], ["access"], "network-share-object-access-checked"),
    "5156": (["network"], ["connection", "allowed"], "network-connection-allowed"),
    "5157": (["network"], ["connection", "denied"], "network-connection-blocked"),
    "5158": (["network"], ["allowed"], "network-bind-allowed"),
}
SYSMON_EVENTS: dict[str, tuple[list[str], list[str], str]] = {
    "1": (["process"], ["start"], "process-created"),
    "2": (["file"], ["change"], "file-creation-time-changed"),
    "3": (["network"], ["start", "connection", "protocol"], "network-connection"),
    "4": (["process"], ["change"], "sysmon-state-changed"),
    "5": (["process"], ["end"], "process-terminated"),
    "6": (["driver"], ["start"], "driver-loaded"),
    "7": (["process"], ["change"], "image-loaded"),
    "8": (["process"], ["change"], "remote-thread-created"),
    "9": (["process"], ["access"], "raw-disk-read"),
    "10": (["process"], ["access"], "process-accessed"),
    "11": (["file"], ["creation"], "file-created"),
    "12": (["configuration", "registry"], ["change"], "registry-object-added-or-deleted"),
    "13": (["configuration", "registry"], ["change"], "registry-value-set"),
    "14": (["configuration", "registry"], ["change"], "registry-object-renamed"),
    "15": (["file"], ["access"], "file-stream-created"),
    "16": (["configuration"], ["change"], "sysmon-config-changed"),
    "17": (["file"], ["creation"], "pipe-created"),
    "18": (["file"], ["access"], "pipe-connected"),
    "19": (["process"], ["info"], "wmi-filter-activity"),
    "20": (["process"], ["change"], "wmi-consumer-activity"),
    "21": (["process"], ["access"], "wmi-consumer-to-filter-activity"),
    "22": (["network"], ["connection", "protocol", "info"], "dns-query"),
    "23": (["file"], ["deletion"], "file-deleted"),
    "24": ([], ["change"], "clipboard-changed"),
    "25": (["process"], ["change"], "process-tampered"),
    "26": (["file"], ["deletion"], "file-delete-logged"),
    "27": (["file"], ["creation"], "file-executable-blocked"),
    "28": (["file"], ["deletion"], "file-shredding-blocked"),
    "29": (["file"], ["creation"], "file-executable-detected"),
    "255": (["process"], [], "sysmon-error"),
}
SYSTEM_EVENTS: dict[str, tuple[list[str], list[str], str]] = {
    "104": (["iam"], ["admin", "change"], "log-cleared"),
    "7045": (["configuration"], ["creation"], "service-installed"),
    "7036": ([], [], "service-state-changed"),
    "7040": (["configuration"], ["change"], "service-start-type-changed"),
}
POWERSHELL_EVENTS: dict[str, tuple[list[str], list[str], str]] = {
    "400": (["process"], ["start"], "engine-started"),
    "403": (["process"], ["end"], "engine-stopped"),
    "600": (["process"], ["info"], "provider-started"),
    "800": (["process"], ["info"], "pipeline-executed"),
    "4103": (["process"], ["info"], "pipeline-executed"),
    "4104": (["process"], ["info"], "script-block-logged"),
    "4105": (["process"], ["info"], "script-block-started"),
    "4106": (["process"], ["info"], "script-block-completed"),
}
EVENT_TABLES = {
    SECURITY: SECURITY_EVENTS,
    SYSMON: SYSMON_EVENTS,
    SYSTEM: SYSTEM_EVENTS,
    POWERSHELL: POWERSHELL_EVENTS,
    POWERSHELL_OPERATIONAL: POWERSHELL_EVENTS,
}

LOGON_TYPES = {
    "0": "System", "2": "Interactive", "3": "Network", "4": "Batch", "5": "Service",
    "7": "Unlock", "8": "NetworkCleartext", "9": "NewCredentials", "10": "RemoteInteractive",
    "11": "CachedInteractive", "12": "CachedRemoteInteractive", "13": "CachedUnlock",
}  # fmt: skip
# %%-codes of 4625's FailureReason.
LOGON_FAILURE_REASONS = {
    "2304": "An Error occured during Logon.",
    "2305": "The specified user account has expired.",
    "2306": "The NetLogon component is not active.",
    "2307": "Account locked out.",
    "2308": "The user has not been granted the requested logon type at this machine.",
    "2309": "The specified account's password has expired.",
    "2310": "Account currently disabled.",
    "2311": "Account logon time restriction violation.",
    "2312": "User not allowed to logon at this computer.",
    "2313": "Unknown user name or bad password.",
    "2314": "Domain sid inconsistent.",
    "2315": "Smartcard logon is required and was not used.",
}
# NTSTATUS codes in 4625/4776 Status and SubStatus (lower case).
LOGON_FAILURE_STATUS = {
    "0xc000005e": "There are currently no logon servers available to service the logon request.",
    "0xc0000064": "User logon with misspelled or bad user account",
    "0xc000006a": "User logon with misspelled or bad password",
    "0xc000006d": "This is either due to a bad username or authentication information",
    "0xc000006e": "Unknown user name or bad password.",
    "0xc000006f": "User logon outside authorized hours",
    "0xc0000070": "User logon from unauthorized workstation",
    "0xc0000071": "User logon with expired password",
    "0xc0000072": "User logon to account disabled by administrator",
    "0xc00000dc": "Indicates the Sam Server was in the wrong state to perform the desired operation.",
    "0xc0000133": "Clocks between DC and other computer too far out of sync",
    "0xc000015b": "The user has not been granted the requested logon type (aka logon right) at this machine",
    "0xc000018c": "The logon request failed because the trust relationship between the primary domain and the trusted domain failed.",
    "0xc0000192": "An attempt was made to logon, but the Netlogon service was not started.",
    "0xc0000193": "User logon with expired account",
    "0xc0000224": "User is required to change password at next logon",
    "0xc0000225": "Evidently a bug in Windows and not a risk",
    "0xc0000234": "User logon with account locked",
    "0xc00002ee": "Failure Reason: An Error occurred during Logon",
    "0xc0000413": "Logon Failure: The machine you are logging onto is protected by an authentication firewall. The specified account is not allowed to authenticate to the machine.",
    "0xc0000371": "The local account store does not contain secret material for the specified account",
}
KERBEROS_STATUS = {
    "0x0": "KDC_ERR_NONE", "0x1": "KDC_ERR_NAME_EXP", "0x2": "KDC_ERR_SERVICE_EXP",
    "0x3": "KDC_ERR_BAD_PVNO", "0x4": "KDC_ERR_C_OLD_MAST_KVNO", "0x5": "KDC_ERR_S_OLD_MAST_KVNO",
    "0x6": "KDC_ERR_C_PRINCIPAL_UNKNOWN", "0x7": "KDC_ERR_S_PRINCIPAL_UNKNOWN",
    "0x8": "KDC_ERR_PRINCIPAL_NOT_UNIQUE", "0x9": "KDC_ERR_NULL_KEY", "0xa": "KDC_ERR_CANNOT_POSTDATE",
    "0xb": "KDC_ERR_NEVER_VALID", "0xc": "KDC_ERR_POLICY", "0xd": "KDC_ERR_BADOPTION",
    "0xe": "KDC_ERR_ETYPE_NOTSUPP", "0xf": "KDC_ERR_SUMTYPE_NOSUPP", "0x10": "KDC_ERR_PADATA_TYPE_NOSUPP",
    "0x11": "KDC_ERR_TRTYPE_NO_SUPP", "0x12": "KDC_ERR_CLIENT_REVOKED", "0x13": "KDC_ERR_SERVICE_REVOKED",
    "0x14": "KDC_ERR_TGT_REVOKED", "0x15": "KDC_ERR_CLIENT_NOTYET", "0x16": "KDC_ERR_SERVICE_NOTYET",
    "0x17": "KDC_ERR_KEY_EXPIRED", "0x18": "KDC_ERR_PREAUTH_FAILED", "0x19": "KDC_ERR_PREAUTH_REQUIRED",
    "0x1a": "KDC_ERR_SERVER_NOMATCH", "0x1b": "KDC_ERR_MUST_USE_USER2USER", "0x1f": "KRB_AP_ERR_BAD_INTEGRITY",
    "0x20": "KRB_AP_ERR_TKT_EXPIRED", "0x21": "KRB_AP_ERR_TKT_NYV", "0x22": "KRB_AP_ERR_REPEAT",
    "0x23": "KRB_AP_ERR_NOT_US", "0x24": "KRB_AP_ERR_BADMATCH", "0x25": "KRB_AP_ERR_SKEW",
    "0x26": "KRB_AP_ERR_BADADDR", "0x27": "KRB_AP_ERR_BADVERSION", "0x28": "KRB_AP_ERR_MSG_TYPE",
    "0x29": "KRB_AP_ERR_MODIFIED", "0x2a": "KRB_AP_ERR_BADORDER", "0x2c": "KRB_AP_ERR_BADKEYVER",
    "0x2d": "KRB_AP_ERR_NOKEY", "0x2e": "KRB_AP_ERR_MUT_FAIL", "0x2f": "KRB_AP_ERR_BADDIRECTION",
    "0x30": "KRB_AP_ERR_METHOD", "0x31": "KRB_AP_ERR_BADSEQ", "0x32": "KRB_AP_ERR_INAPP_CKSUM",
    "0x33": "KRB_AP_PATH_NOT_ACCEPTED", "0x34": "KRB_ERR_RESPONSE_TOO_BIG", "0x3c": "KRB_ERR_GENERIC",
    "0x3d": "KRB_ERR_FIELD_TOOLONG", "0x3e": "KDC_ERR_CLIENT_NOT_TRUSTED", "0x3f": "KDC_ERR_KDC_NOT_TRUSTED",
    "0x40": "KDC_ERR_INVALID_SIG", "0x41": "KDC_ERR_KEY_TOO_WEAK", "0x42": "KRB_AP_ERR_USER_TO_USER_REQUIRED",
    "0x43": "KRB_AP_ERR_NO_TGT", "0x44": "KDC_ERR_WRONG_REALM",
}  # fmt: skip
KERBEROS_ENCRYPTION_TYPES = {
    "0x1": "DES-CBC-CRC", "0x3": "DES-CBC-MD5", "0x11": "AES128-CTS-HMAC-SHA1-96",
    "0x12": "AES256-CTS-HMAC-SHA1-96", "0x17": "RC4-HMAC", "0x18": "RC4-HMAC-EXP", "0xffffffff": "FAIL",
}  # fmt: skip
SERVICE_TYPES = {
    "0x1": "Kernel Driver", "0x2": "File System Driver", "0x8": "Recognizer Driver",
    "0x10": "Win32 Own Process", "0x20": "Win32 Share Process",
    "0x110": "Interactive Own Process", "0x120": "Interactive Share Process",
}  # fmt: skip
IANA_PROTOCOLS = {"1": "icmp", "6": "tcp", "17": "udp", "58": "ipv6-icmp"}
WFP_DIRECTIONS = {"%%14592": "ingress", "%%14593": "egress"}
REGISTRY_HIVES = {
    "HKEY_CLASSES_ROOT": "HKCR", "HKCR": "HKCR", "HKEY_CURRENT_CONFIG": "HKCC", "HKCC": "HKCC",
    "HKEY_CURRENT_USER": "HKCU", "HKCU": "HKCU", "HKEY_LOCAL_MACHINE": "HKLM", "HKLM": "HKLM",
    "HKEY_USERS": "HKU", "HKU": "HKU",
}  # fmt: skip
DNS_TYPES = {
    "1": "A",
    "2": "NS",
    "5": "CNAME",
    "6": "SOA",
    "12": "PTR",
    "15": "MX",
    "16": "TXT",
    "28": "AAAA",
    "33": "SRV",
    "65": "HTTPS",
}

# Security events whose Target* fields name the user acting (logging on, authenticating).
TARGET_IS_USER = frozenset(
    {"4624", "4625", "4634", "4647", "4768", "4769", "4770", "4771", "4776", "4964"}
)
# Security events whose Target* fields name the account acted upon.
TARGET_IS_TARGET_USER = frozenset(
    {
        "4670",
        "4720",
        "4722",
        "4723",
        "4724",
        "4725",
        "4726",
        "4738",
        "4740",
        "4767",
        "4798",
        "4817",
        "4907",
    }
)
# Security events where Target* is the account whose credentials the process or logon uses.
TARGET_IS_EFFECTIVE_USER = frozenset({"4648", "4688"})
GROUP_MEMBERSHIP_EVENTS = frozenset(
    {
        "4727",
        "4728",
        "4729",
        "4730",
        "4731",
        "4732",
        "4733",
        "4734",
        "4735",
        "4737",
        "4754",
        "4755",
        "4756",
        "4757",
        "4758",
        "4799",
    }
)
TARGET_LOGON_ID_EVENTS = frozenset({"4624", "4634", "4647", "4964"})
KERBEROS_EVENTS = frozenset({"4768", "4769", "4770", "4771"})
# A "-" or empty user field, or the NULL SID, means no account.
ABSENT = frozenset({"", "-", "S-1-0-0"})

# Flat export keys that describe the event rather than carry event data.
FLAT_HEADER_KEYS = frozenset({
    "EventID", "EventId", "Id", "EventCode", "Qualifiers", "Version", "Level", "LevelDisplayName",
    "Task", "TaskDisplayName", "Opcode", "OpcodeDisplayName", "OpcodeValue", "Keywords",
    "KeywordsDisplayNames", "RecordId", "RecordNumber", "EventRecordID", "ProviderName",
    "ProviderId", "ProviderGuid", "SourceName", "LogName", "Channel", "MachineName", "Hostname",
    "Computer", "ComputerName", "UserId", "UserID", "TimeCreated", "EventTime", "TimeGenerated",
    "EventReceivedTime", "ActivityId", "ActivityID", "RelatedActivityId", "RelatedActivityID",
    "ContainerLog", "MatchedQueryIds", "Bookmark", "Properties", "Message", "EventType",
    "Severity", "SeverityValue", "Category", "SourceModuleName", "SourceModuleType",
    "ThreadID", "ThreadId", "EventData", "UserData", "@timestamp",
})  # fmt: skip
FLAT_EVENT_ID_KEYS = ("EventID", "EventId", "EventCode", "Id")
FLAT_PROVIDER_KEYS = ("ProviderName", "SourceName")
FLAT_CHANNEL_KEYS = ("Channel", "LogName")
FLAT_TIME_KEYS = ("TimeCreated", "EventTime", "TimeGenerated", "@timestamp")
FLAT_COMPUTER_KEYS = ("MachineName", "Hostname", "Computer", "ComputerName")
FLAT_RECORD_ID_KEYS = ("RecordId", "RecordNumber", "EventRecordID")
NXLOG_SEVERITIES = {
    "DEBUG": "verbose",
    "INFO": "information",
    "WARNING": "warning",
    "ERROR": "error",
    "CRITICAL": "critical",
}
DOTNET_DATE = re.compile(r"/Date\((-?\d+)(?:[+-]\d{4})?\)/")

POWERSHELL_CONTEXT_LINE = re.compile(
    r"^[ \t]*([A-Za-z][A-Za-z ]*?)[ \t]*=[ \t]?(.*?)[ \t\r]*$", re.MULTILINE
)
COMMAND_LINE_SPLIT = re.compile(r"[ \t]+")
# A quote with the backslashes before it, a run of blanks, or other text.
COMMAND_LINE_TOKEN = re.compile(r'(\\*)"|([ \t]+)|([^ \t"\\]+|\\+)')
# Event data names that feed each group of ECS fields (the rest is skipped quickly).
LOGON_KEYS = frozenset({"SubjectLogonId", "TargetLogonId", "LogonID"})
PROCESS_KEYS = frozenset({
    "ProcessGuid", "SourceProcessGuid", "SourceProcessGUID", "ProcessId", "SourceProcessId",
    "SourceThreadId", "Image", "SourceImage", "ProcessName", "Application", "Destination",
    "CommandLine", "CurrentDirectory", "ParentProcessGuid", "ParentProcessId", "ParentImage",
    "ParentCommandLine",
})  # fmt: skip
FILE_KEYS = frozenset({
    "TargetFilename", "ImageLoaded", "Device", "FileName", "PipeName", "Signed", "Signature",
    "SignatureStatus",
})  # fmt: skip
NETWORK_KEYS = frozenset({
    "SourceIp", "IpAddress", "SourceAddress", "ClientAddress", "SourcePort", "IpPort",
    "SourceHostname", "WorkstationName", "ClientName", "DestinationIp", "DestAddress",
    "DestinationPort", "DestPort", "DestinationHostname", "QueryName",
})  # fmt: skip
DN_SEPARATOR = re.compile(r"(?<!\\),")
DN_ESCAPE = re.compile(r"\\(.)")
KERNEL_HIVES = {"MACHINE": "HKLM", "USER": "HKU"}
BOOLEAN_DIRECTIONS = {"true": "egress", "false": "ingress"}
BOOLEAN_IP_VERSIONS = {"true": "ipv6", "false": "ipv4"}
PE_FIELDS = (
    ("OriginalFileName", "original_file_name"),
    ("Company", "company"),
    ("Description", "description"),
    ("FileVersion", "file_version"),
    ("Product", "product"),
)
# Event data (after PowerShell's detail blocks are split) -> ECS/powershell.* field.
POWERSHELL_FIELDS = (
    ("EngineVersion", "powershell.engine.version"),
    ("NewEngineState", "powershell.engine.new_state"),
    ("PreviousEngineState", "powershell.engine.previous_state"),
    ("NewProviderState", "powershell.provider.new_state"),
    ("ProviderName", "powershell.provider.name"),
    ("CommandName", "powershell.command.name"),
    ("CommandPath", "powershell.command.path"),
    ("CommandType", "powershell.command.type"),
    ("HostVersion", "powershell.process.executable_version"),
    ("RunspaceId", "powershell.runspace_id"),
    ("PipelineId", "powershell.pipeline_id"),
    ("HostId", "process.entity_id"),
    ("HostName", "process.title"),
)


def sniff(record: Record) -> bool:
    """A Windows event in one of the accepted shapes (or an EVTX damage marker)."""
    if isinstance(record, str):
        text = record.lstrip("\ufeff \t")
        if not text.startswith("{") or not (
            '"Event"' in text
            or '"winlog' in text
            or '"EventID"' in text
            or '"Id"' in text
            or '"EventId"' in text
            or EVTX_ERROR_KEY in text
        ):
            return False
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return False
        return isinstance(value, dict) and _shape(value) is not None
    return isinstance(record, dict) and _shape(record) is not None


def parse(record: Record, context: ParseContext) -> dict[str, Any]:
    """One Windows event to ECS in Winlogbeat's layout."""
    if isinstance(record, str):
        try:
            value = json.loads(record.lstrip("\ufeff"))
        except (ValueError, RecursionError) as error:
            raise ParseError(f"invalid JSON: {error}", record) from error
    else:
        value = record
    if not isinstance(value, dict):
        raise ParseError(f"expected a JSON object, got {type(value).__name__}", record)
    shape = _shape(value)
    try:
        if shape == "evtx":
            document = _from_evtx(value["Event"])
        elif shape == "winlogbeat":
            document = _from_winlogbeat(value, context)
        elif shape == "flat":
            document = _from_flat(value, context)
        elif shape == "damaged":
            raise ParseError(f"damaged EVTX data: {value[EVTX_ERROR_KEY]}", record)
        else:
            raise ParseError(
                "not a Windows event (no Event/System, winlog, or EventID with a provider)",
                record,
            )
    except ParseError as error:
        if error.record is None:
            error.record = record
        raise
    except RecursionError as error:
        raise ParseError("Windows event nested too deeply", record) from error
    except (TypeError, ValueError, AttributeError, KeyError) as error:
        # Structures of the wrong type deep inside a record: refuse it, with the cause.
        raise ParseError(
            f"malformed Windows event: {type(error).__name__}: {error}", record
        ) from error
    return document


def _shape(value: dict[str, Any]) -> str | None:
    event = value.get("Event")
    if isinstance(event, dict) and isinstance(event.get("System"), dict):
        return "evtx"
    if (
        isinstance(value.get("winlog"), dict)
        or "winlog.event_id" in value
        or "winlog.channel" in value
    ):
        return "winlogbeat"
    source = value.get("_source")
    if isinstance(source, dict) and ("winlog" in source or "winlog.event_id" in source):
        return "winlogbeat"
    if EVTX_ERROR_KEY in value:
        return "damaged"
    if any(key in value for key in FLAT_EVENT_ID_KEYS[:3]) and (
        any(key in value for key in FLAT_PROVIDER_KEYS) or "Channel" in value
    ):
        return "flat"
    # Get-WinEvent's bare "Id" is too generic on its own.
    if "Id" in value and "ProviderName" in value and "TimeCreated" in value:
        return "flat"
    return None


# --- the three input shapes -------------------------------------------------------------


def _from_evtx(event: dict[str, Any]) -> dict[str, Any]:
    system = event["System"]
    event_id = _event_id(system.get("EventID"))
    provider = _attributes(system, "Provider")
    time_created = _attributes(system, "TimeCreated").get("SystemTime")
    if not time_created:
        raise ParseError("EVTX record without System/TimeCreated/@SystemTime")
    moment = _parse_time(str(time_created), None)
    winlog: dict[str, Any] = {"event_id": event_id}
    channel = system.get("Channel")
    if isinstance(channel, str) and channel:
        winlog["channel"] = channel
    else:
        channel = None
    provider_name = provider.get("Name") or provider.get("EventSourceName")
    if provider_name:
        winlog["provider_name"] = provider_name
    if provider.get("Guid"):
        winlog["provider_guid"] = _braced(provider["Guid"])
    record_id = system.get("EventRecordID")
    if record_id is not None:
        winlog["record_id"] = str(record_id)
    computer = system.get("Computer")
    if computer:
        winlog["computer_name"] = computer
    version = system.get("Version")
    if isinstance(version, int):
        winlog["version"] = version
    opcode = system.get("Opcode")
    if opcode.__class__ is int and opcode in OPCODES:
        winlog["opcode"] = OPCODES[opcode]
    keywords = _keywords_value(system.get("Keywords"))
    execution = _attributes(system, "Execution")
    if execution:
        process: dict[str, Any] = {}
        if isinstance(execution.get("ProcessID"), int):
            process["pid"] = execution["ProcessID"]
        if isinstance(execution.get("ThreadID"), int):
            process["thread"] = {"id": execution["ThreadID"]}
        if process:
            winlog["process"] = process
    user_sid = _attributes(system, "Security").get("UserID")
    if user_sid:
        winlog["user"] = {"identifier": user_sid}
    correlation = _attributes(system, "Correlation")
    if correlation.get("ActivityID"):
        winlog["activity_id"] = _braced(correlation["ActivityID"])
    if correlation.get("RelatedActivityID"):
        winlog["related_activity_id"] = _braced(correlation["RelatedActivityID"])
    event_data = _event_data(event.get("EventData"))
    if event_data:
        winlog["event_data"] = event_data
    user_data = _user_data(event.get("UserData"))
    if user_data:
        winlog["user_data"] = user_data
    error_data = event.get("ProcessingErrorData")
    if isinstance(error_data, dict):
        # The provider's payload did not match its manifest; keep what Windows reported.
        winlog["processing_error_data"] = _event_data(error_data)
    dataset, kind = _dataset(channel, provider_name)
    if kind == SECURITY:
        task = system.get("Task")
        if task.__class__ is int and task in AUDIT_SUBCATEGORIES:
            winlog["task"] = AUDIT_SUBCATEGORIES[task]
    document: dict[str, Any] = {
        "@timestamp": format_timestamp(moment),
        "event": {"kind": "event", "code": event_id, "module": "windows", "dataset": dataset},
        "winlog": winlog,
    }
    if provider_name:
        document["event"]["provider"] = provider_name
    if computer:
        document["host"] = {"name": computer}
    level = system.get("Level")
    if level.__class__ is int and level in LEVELS:
        document["log"] = {"level": LEVELS[level]}
    _apply_keywords(document, winlog, keywords)
    _enrich(document, winlog, event_id, kind)
    return document


def _from_winlogbeat(value: dict[str, Any], context: ParseContext) -> dict[str, Any]:
    if isinstance(value.get("_source"), dict):
        value = value["_source"]  # a document exported from Elasticsearch
    if _deeper_than(value, MAX_DOCUMENT_DEPTH):
        raise ParseError(f"Winlogbeat document nested deeper than {MAX_DOCUMENT_DEPTH} levels")
    document = nest_dotted_keys(value)
    winlog = document["winlog"]
    event = document.get("event")
    if not isinstance(event, dict):
        event = {}
        document["event"] = event
    event.pop("original", None)  # the pipeline keeps the input it read as event.original
    raw_id = winlog.get("event_id", event.get("code"))
    if raw_id is None or isinstance(raw_id, dict | list | bool):
        raise ParseError("Winlogbeat event without winlog.event_id or event.code")
    event_id = _event_id(raw_id)
    winlog["event_id"] = event_id
    event["code"] = event_id
    if winlog.get("record_id") is not None:
        winlog["record_id"] = str(winlog["record_id"])
    raw_time = document.get("@timestamp") or winlog.get("time_created") or event.get("created")
    if not raw_time:
        raise ParseError("Winlogbeat event without @timestamp")
    document["@timestamp"] = format_timestamp(_parse_time(raw_time, context))
    channel = winlog.get("channel") if isinstance(winlog.get("channel"), str) else None
    provider_name = winlog.get("provider_name") or event.get("provider")
    if provider_name:
        winlog.setdefault("provider_name", provider_name)
        event.setdefault("provider", provider_name)
    dataset, kind = _dataset(channel, provider_name)
    event.setdefault("kind", "event")
    event.setdefault("module", "windows")
    event.setdefault("dataset", dataset)
    _put(document, "host.name", winlog.get("computer_name") or None)
    if isinstance(winlog.get("level"), str) and winlog["level"]:
        _put(document, "log.level", winlog["level"].lower())
    keywords = winlog.get("keywords")
    if isinstance(keywords, list) and "outcome" not in event:
        if "Audit Failure" in keywords:
            event["outcome"] = "failure"
        elif "Audit Success" in keywords:
            event["outcome"] = "success"
    _enrich(document, winlog, event_id, kind)
    return document


def _from_flat(value: dict[str, Any], context: ParseContext) -> dict[str, Any]:
    raw_id = _first(value, FLAT_EVENT_ID_KEYS)
    if raw_id is None:
        raise ParseError("flat Windows event without EventID")
    event_id = _event_id(raw_id)
    raw_time = _first(value, FLAT_TIME_KEYS)
    if raw_time is None:
        raise ParseError(f"flat Windows event without a time ({', '.join(FLAT_TIME_KEYS)})")
    moment = _parse_time(raw_time, context)
    winlog: dict[str, Any] = {"event_id": event_id}
    channel = _first(value, FLAT_CHANNEL_KEYS)
    channel = channel if isinstance(channel, str) and channel else None
    if channel:
        winlog["channel"] = channel
    provider_name = _first(value, FLAT_PROVIDER_KEYS)
    if provider_name:
        winlog["provider_name"] = str(provider_name)
    provider_guid = value.get("ProviderId") or value.get("ProviderGuid")
    if provider_guid:
        winlog["provider_guid"] = _braced(str(provider_guid))
    record_id = _first(value, FLAT_RECORD_ID_KEYS)
    if record_id is not None:
        winlog["record_id"] = str(record_id)
    computer = _first(value, FLAT_COMPUTER_KEYS)
    if computer:
        winlog["computer_name"] = str(computer)
    if isinstance(value.get("Version"), int):
        winlog["version"] = value["Version"]
    task_name = value.get("TaskDisplayName") or value.get("Category")
    if isinstance(task_name, str) and task_name:
        winlog["task"] = task_name
    opcode = value.get("OpcodeDisplayName") or value.get("Opcode")
    if isinstance(opcode, int):
        opcode = OPCODES.get(opcode)
    if isinstance(opcode, str) and opcode:
        winlog["opcode"] = opcode
    has_properties = isinstance(value.get("Properties"), list)
    # Get-WinEvent names the writing process ProcessId; nxlog says ProcessID and keeps
    # ProcessId for event data (Sysmon's), so only the former is a header there.
    pid = value.get("ProcessId") if has_properties else value.get("ProcessID")
    tid = value.get("ThreadId", value.get("ThreadID"))
    process: dict[str, Any] = {}
    if isinstance(pid, int):
        process["pid"] = pid
    if isinstance(tid, int):
        process["thread"] = {"id": tid}
    if process:
        winlog["process"] = process
    user = _flat_user(value)
    if user:
        winlog["user"] = user
    activity = value.get("ActivityId") or value.get("ActivityID")
    if activity:
        winlog["activity_id"] = _braced(str(activity))
    related_activity = value.get("RelatedActivityId") or value.get("RelatedActivityID")
    if related_activity:
        winlog["related_activity_id"] = _braced(str(related_activity))
    event_data = _flat_event_data(value, has_properties)
    if event_data:
        winlog["event_data"] = event_data
    user_data = _user_data(value.get("UserData"))
    if user_data:
        winlog["user_data"] = user_data
    dataset, kind = _dataset(channel, provider_name)
    document: dict[str, Any] = {
        "@timestamp": format_timestamp(moment),
        "event": {"kind": "event", "code": event_id, "module": "windows", "dataset": dataset},
        "winlog": winlog,
    }
    if provider_name:
        document["event"]["provider"] = str(provider_name)
    if computer:
        document["host"] = {"name": str(computer)}
    level = _flat_level(value)
    if level:
        document["log"] = {"level": level}
    message = value.get("Message")
    if isinstance(message, str) and message.strip():
        document["message"] = message
    keywords = _keywords_value(value.get("Keywords"))
    display_names = value.get("KeywordsDisplayNames")
    event_type = value.get("EventType")
    if keywords is None and event_type in ("AUDIT_SUCCESS", "AUDIT_FAILURE"):
        keywords = KEYWORD_AUDIT_SUCCESS if event_type == "AUDIT_SUCCESS" else KEYWORD_AUDIT_FAILURE
    _apply_keywords(document, winlog, keywords)
    if isinstance(display_names, list) and display_names:
        winlog["keywords"] = [str(name) for name in display_names if name]
    _enrich(document, winlog, event_id, kind)
    return document


def _flat_user(value: dict[str, Any]) -> dict[str, Any]:
    user: dict[str, Any] = {}
    sid = value.get("UserId") or value.get("UserID")
    if isinstance(sid, dict):  # ConvertTo-Json of a SecurityIdentifier object
        sid = sid.get("Value")
    if sid:
        user["identifier"] = str(sid)
    # nxlog resolves the SID into AccountName/Domain/AccountType at the top level.
    if "AccountType" in value and value.get("AccountName"):
        user["name"] = str(value["AccountName"])
        if value.get("Domain"):
            user["domain"] = str(value["Domain"])
        user["type"] = str(value["AccountType"])
    return user


def _flat_event_data(value: dict[str, Any], has_properties: bool) -> dict[str, Any]:
    explicit = value.get("EventData")
    if isinstance(explicit, dict):
        return _event_data(explicit)
    if has_properties:
        data: dict[str, Any] = {}
        for position, item in enumerate(value["Properties"], 1):
            inner = item.get("Value") if isinstance(item, dict) else item
            if isinstance(inner, dict):  # e.g. a SecurityIdentifier with its own Value
                inner = inner.get("Value")
            text = _text(inner)
            if text:
                data[f"param{position}"] = text
        return data
    nxlog_account = "AccountType" in value
    data = {}
    for key, item in value.items():
        if key in FLAT_HEADER_KEYS or key == "ProcessID":
            continue
        if nxlog_account and key in ("AccountName", "Domain", "AccountType"):
            continue
        text = _text(item)
        if text:
            data[key] = text
    return data


def _flat_level(value: dict[str, Any]) -> str | None:
    level = value.get("Level")
    if isinstance(level, int):
        return LEVELS.get(level)
    display = value.get("LevelDisplayName") or value.get("Severity")
    if isinstance(display, str) and display:
        return NXLOG_SEVERITIES.get(display.upper(), display.lower())
    return None


# --- shared decoding helpers ------------------------------------------------------------


def _attributes(system: dict[str, Any], element: str) -> dict[str, Any]:
    node = system.get(element)
    if node.__class__ is dict:
        attributes = node.get("#attributes")
        if attributes.__class__ is dict:
            return attributes
    elif node is None and system.get(element + "_attributes").__class__ is dict:
        return system[element + "_attributes"]  # evtx_dump --separate-json-attributes
    return _NO_ATTRIBUTES


_NO_ATTRIBUTES: dict[str, Any] = {}


def _event_id(raw: Any) -> str:
    if isinstance(raw, dict):  # <EventID Qualifiers="16384">7045</EventID>
        raw = raw.get("#text")
    if isinstance(raw, bool) or raw is None:
        raise ParseError(f"missing or invalid EventID: {raw!r}")
    text = str(raw).strip()
    if not text.isdigit():
        raise ParseError(f"EventID is not a number: {text[:40]!r}")
    number = int(text)
    if number > MAX_EVENT_ID:
        raise ParseError(f"EventID {text[:40]} is out of range (0-{MAX_EVENT_ID})")
    return str(number)


def _parse_time(raw: Any, context: ParseContext | None) -> datetime:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        seconds = raw / 1000 if raw > 1e11 else raw
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as error:
            raise ParseError(f"epoch timestamp out of range: {raw!r}") from error
    if not isinstance(raw, str):
        raise ParseError(f"unreadable timestamp {raw!r}")
    text = raw.strip()
    dotnet = DOTNET_DATE.fullmatch(text)
    if dotnet:  # Windows PowerShell 5.1's ConvertTo-Json: /Date(epoch milliseconds)/
        return datetime.fromtimestamp(int(dotnet.group(1)) / 1000, UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise ParseError(f"unreadable timestamp {raw!r}") from error
    if moment.tzinfo is None:
        if context is None:
            raise ParseError(f"timestamp without a time zone: {raw!r}")
        moment = moment.replace(tzinfo=context.timezone)
    return moment


def _deeper_than(value: Any, limit: int) -> bool:
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
    return False


def _braced(guid: str) -> str:
    return guid if guid.startswith("{") else "{" + guid + "}"


def _keywords_value(raw: Any) -> int | None:
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, int):
        return raw & 0xFFFFFFFFFFFFFFFF  # .NET and nxlog write the mask as a signed long
    if isinstance(raw, str):
        try:
            return int(raw, 0) & 0xFFFFFFFFFFFFFFFF
        except ValueError:
            return None
    return None


def _apply_keywords(document: dict[str, Any], winlog: dict[str, Any], keywords: int | None) -> None:
    if not keywords:
        return
    names = []
    if keywords & KEYWORD_AUDIT_SUCCESS:
        names.append("Audit Success")
        document["event"]["outcome"] = "success"
    if keywords & KEYWORD_AUDIT_FAILURE:
        names.append("Audit Failure")
        document["event"]["outcome"] = "failure"
    if keywords & KEYWORD_CLASSIC:
        names.append("Classic")
    if names:
        winlog["keywords"] = names


def _text(value: Any, depth: int = 0) -> Any:
    """An event data value as Windows renders it: a string (or a list of strings)."""
    if isinstance(value, str):
        return value
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if depth > MAX_VALUE_DEPTH:
        raise ParseError(f"event data nested deeper than {MAX_VALUE_DEPTH} levels")
    if isinstance(value, dict):
        if "#text" in value:
            return _text(value["#text"], depth + 1)
        nested = {k: _text(v, depth + 1) for k, v in value.items() if k != "#attributes"}
        return {k: v for k, v in nested.items() if v not in (None, "")} or None
    if isinstance(value, list):
        items = [_text(item, depth + 1) for item in value]
        return [item for item in items if item not in (None, "")] or None
    return str(value)


def _event_data(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        text = _text(raw)
        return {"param1": text} if text else {}
    data: dict[str, Any] = {}
    position = 0
    for key, value in raw.items():
        if key == "#attributes":
            continue
        if key == "Data" or key == "#text":
            # Unnamed <Data> elements (classic event sources): param1, param2, ...
            values = value.get("#text") if isinstance(value, dict) else value
            for item in values if isinstance(values, list) else [values]:
                position += 1
                text = _text(item)
                if text:
                    data[f"param{position}"] = text
            continue
        position += 1
        if type(value) is str:
            if value:
                data[key] = value
            continue
        text = _text(value)
        if text is not None and text != "":
            data[key] = text
    return data


def _user_data(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {}
    for name, element in raw.items():
        if name == "#attributes":
            continue
        data = _event_data(element) if isinstance(element, dict) else {}
        data["xml_name"] = name
        return data
    return {}


def _dataset(channel: str | None, provider_name: Any) -> tuple[str, str | None]:
    if channel:
        known = KNOWN_CHANNELS.get(channel.lower())
        if known:
            return known
        return "windows." + _NOT_NAME_CHARS.sub("_", channel.lower()).strip("_"), None
    if provider_name:
        return "windows." + _NOT_NAME_CHARS.sub("_", str(provider_name).lower()).strip("_"), None
    return "windows.unknown", None


def _first(value: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        item = value.get(key)
        if item is not None and item != "":
            return item
    return None


# --- ECS enrichment ---------------------------------------------------------------------


def _enrich(document: dict[str, Any], winlog: dict[str, Any], code: str, kind: str | None) -> None:
    event = document["event"]
    table = EVENT_TABLES.get(kind) if kind else None
    if table and code in table:
        category, types, action = table[code]
        if category:
            event.setdefault("category", list(category))
        if types:
            event.setdefault("type", list(types))
        event.setdefault("action", action)
    # Enrichment reads a string-only view, so a list or object where Windows writes a
    # string (hostile or odd input) is left in event_data and never breaks the record.
    data = _string_fields(winlog.get("event_data"))
    user_data = _string_fields(winlog.get("user_data"))
    if kind == SECURITY:
        _security(document, winlog, code, data, user_data)
    elif kind == SYSMON:
        _sysmon(document, code, data)
    elif kind == SYSTEM:
        _system(document, code, data)
    elif kind == POWERSHELL:
        _powershell_classic(document, winlog, code, data)
    elif kind == POWERSHELL_OPERATIONAL:
        _powershell_operational(document, winlog, data)
    _common_fields(document, winlog, data, user_data, kind)
    _related(document)
    # An event carries either EventData or UserData, and Sigma rules (like Windows' own
    # rendering) name a UserData field as they name an EventData one (`Address` of
    # TerminalServices 21, `SubjectUserName` of 1102): its fields are also given there.
    if "event_data" not in winlog and isinstance(winlog.get("user_data"), dict):
        fields = {key: value for key, value in winlog["user_data"].items() if key != "xml_name"}
        if fields:
            winlog["event_data"] = fields


def _security(
    document: dict[str, Any],
    winlog: dict[str, Any],
    code: str,
    data: dict[str, Any],
    user_data: dict[str, Any],
) -> None:
    get = data.get
    if code in TARGET_IS_USER:
        target = _user_fields(
            get("TargetUserSid") or get("TargetSid"), get("TargetUserName"), get("TargetDomainName")
        )
        _set_user(document, target)
    else:
        subject = _user_fields(
            get("SubjectUserSid") or user_data.get("SubjectUserSid"),
            get("SubjectUserName") or user_data.get("SubjectUserName"),
            get("SubjectDomainName") or user_data.get("SubjectDomainName"),
        )
        _set_user(document, subject)
    if code in TARGET_IS_TARGET_USER:
        target = _user_fields(
            get("TargetSid") or get("TargetUserSid"), get("TargetUserName"), get("TargetDomainName")
        )
        _set_user_role(document, "target", target)
    elif code in TARGET_IS_EFFECTIVE_USER:
        effective = _user_fields(
            get("TargetUserSid"), get("TargetUserName"), get("TargetDomainName")
        )
        _set_user_role(document, "effective", effective)
    elif code in GROUP_MEMBERSHIP_EVENTS:
        _group_membership(document, data)

    logon_id = get("TargetLogonId") if code in TARGET_LOGON_ID_EVENTS else None
    logon_id = logon_id or get("SubjectLogonId") or user_data.get("SubjectLogonId")
    _put(winlog, "logon.id", _present(logon_id))
    _put(winlog, "logon.type", LOGON_TYPES.get(get("LogonType", "")))
    status = get("Status", "").lower()
    if code == "4625" or (code == "4776" and status not in ("", "0x0")):
        reason = LOGON_FAILURE_REASONS.get(get("FailureReason", "").replace("%%", ""))
        _put(winlog, "logon.failure.reason", reason)
        _put(winlog, "logon.failure.status", LOGON_FAILURE_STATUS.get(status))
        _put(
            winlog,
            "logon.failure.sub_status",
            LOGON_FAILURE_STATUS.get(get("SubStatus", "").lower()),
        )
        document["event"]["outcome"] = "failure"

    if code == "4688":
        _put(document, "process.pid", _pid(get("NewProcessId")))
        _put_executable(document, "process", get("NewProcessName"))
        _put(document, "process.parent.pid", _pid(get("ProcessId")))
        _put_executable(document, "process.parent", get("ParentProcessName"))
    elif code == "4689":
        _put(document, "process.exit_code", _pid(get("Status"), keep_zero=True))
    elif code in KERBEROS_EVENTS:
        if status:
            description = KERBEROS_STATUS.get(status)
            if description:
                _add_event_data(winlog, data, "StatusDescription", description)
            if status != "0x0":
                document["event"]["outcome"] = "failure"
        encryption = KERBEROS_ENCRYPTION_TYPES.get(get("TicketEncryptionType", "").lower())
        if encryption:
            _add_event_data(winlog, data, "TicketEncryptionTypeDescription", encryption)
    elif code == "4776":
        _put(document, "source.domain", _present(get("Workstation")))
    elif code == "4697":
        _put(document, "service.type", SERVICE_TYPES.get(get("ServiceType", "").lower()))
    elif code in ("5156", "5157", "5158"):
        _put(document, "network.transport", IANA_PROTOCOLS.get(get("Protocol", "")))
        _put(document, "network.direction", WFP_DIRECTIONS.get(get("Direction", "")))
        _put(document, "process.pid", _pid(get("ProcessID")))


def _string_fields(data: Any) -> dict[str, str]:
    if not isinstance(data, dict):
        return {}
    fields = {}
    for key, value in data.items():
        if value.__class__ is str:
            fields[key] = value
        elif isinstance(value, int | float):  # pass-through documents may carry numbers
            fields[key] = _text(value)
    return fields


def _add_event_data(winlog: dict[str, Any], fields: dict[str, str], key: str, value: str) -> None:
    """Add a field to winlog.event_data (and the view enrichment reads), keeping any present."""
    if key in fields:
        return
    fields[key] = value
    event_data = winlog.get("event_data")
    if event_data is None:
        event_data = winlog["event_data"] = {}
    if isinstance(event_data, dict):
        event_data.setdefault(key, value)


def _group_membership(document: dict[str, Any], data: dict[str, Any]) -> None:
    target: dict[str, Any] = {}
    member = _present(data.get("MemberName"))
    if member:
        # A distinguished name: CN=name,OU=...,DC=corp,DC=example
        parts = [DN_ESCAPE.sub(r"\1", part.strip()) for part in DN_SEPARATOR.split(member)]
        first = parts[0]
        target["name"] = first[3:] if first[:3].upper() == "CN=" else first
        domain_parts = [part[3:] for part in parts if part[:3].upper() == "DC="]
        if domain_parts:
            target["domain"] = ".".join(domain_parts)
    member_sid = _present(data.get("MemberSid"))
    if member_sid:
        target["id"] = member_sid
    group: dict[str, Any] = {}
    for key, field in (
        ("TargetSid", "id"),
        ("TargetUserName", "name"),
        ("TargetDomainName", "domain"),
    ):
        value = _present(data.get(key))
        if value:
            group[field] = value
    if group:
        document.setdefault("group", group)
        if target:
            target["group"] = dict(group)
    _set_user_role(document, "target", target)


def _sysmon(document: dict[str, Any], code: str, data: dict[str, Any]) -> None:
    get = data.get
    _put(document, "rule.name", _present(get("RuleName")))
    hashes = _hashes(get("Hashes") or get("Hash"))
    if hashes:
        owner = "process" if code in ("1", "25") else "file"
        imphash = hashes.pop("imphash", None)
        if hashes:
            _put(document, f"{owner}.hash", hashes)
        _put(document, f"{owner}.pe.imphash", imphash)
    if code in ("1", "7"):
        # Version information describes the new process (1) or the loaded image (7).
        owner = "process" if code == "1" else "file"
        for key, field in PE_FIELDS:
            value = _present(get(key))
            if value != "?":
                _put(document, f"{owner}.pe.{field}", value)
    if code == "3":
        _put(document, "network.transport", _lower(get("Protocol")))
        _put(document, "network.direction", BOOLEAN_DIRECTIONS.get(get("Initiated")))
        _put(document, "network.type", BOOLEAN_IP_VERSIONS.get(get("SourceIsIpv6")))
        port_name = _present(get("DestinationPortName") or get("SourcePortName"))
        _put(document, "network.protocol", port_name)
    elif code == "22":
        _put(document, "network.protocol", "dns")
        _put(document, "sysmon.dns.status", _present(get("QueryStatus")))
        _dns_results(document, get("QueryResults"))
    elif code in ("12", "13", "14"):
        _registry(document, data)
    elif code in ("23", "26"):
        for key, field in (("Archived", "archived"), ("IsExecutable", "is_executable")):
            if get(key) in ("true", "false"):
                _put(document, f"sysmon.file.{field}", get(key) == "true")
    elif code == "255":
        document["event"]["outcome"] = "failure"


def _registry(document: dict[str, Any], data: dict[str, Any]) -> None:
    path = _present(data.get("TargetObject"))
    if not path:
        return
    _put(document, "registry.path", path)
    parts = path.split("\\")
    if parts[0] == "" and len(parts) > 2 and parts[1].upper() == "REGISTRY":
        # Kernel-style paths: \REGISTRY\MACHINE\..., \REGISTRY\USER\...
        hive = KERNEL_HIVES.get(parts[2].upper())
        rest = parts[3:]
    else:
        hive = REGISTRY_HIVES.get(parts[0].upper())
        rest = parts[1:]
    _put(document, "registry.hive", hive)
    event_type = data.get("EventType", "")
    details = data.get("Details")
    is_value = "Value" in event_type or (not event_type and details is not None)
    if is_value and rest:
        _put(document, "registry.value", rest[-1])
        rest = rest[:-1]
    if hive and rest:
        _put(document, "registry.key", "\\".join(rest))
    if details is not None:
        _put(document, "registry.data", _registry_data(details))


def _registry_data(details: str) -> dict[str, Any]:
    if details.startswith("DWORD (") and details.endswith(")"):
        try:
            return {"type": "REG_DWORD", "strings": [str(int(details[7:-1], 16))]}
        except ValueError:
            pass
    if details.startswith("QWORD (") and details.endswith(")"):
        high, _, low = details[7:-1].partition("-")
        try:
            return {"type": "REG_QWORD", "strings": [str((int(high, 16) << 32) | int(low, 16))]}
        except ValueError:
            pass
    if details == "Binary Data":
        return {"type": "REG_BINARY"}
    return {"type": "REG_SZ", "strings": [details]}


def _dns_results(document: dict[str, Any], results: Any) -> None:
    # "type:  5 cdn.example.net;::ffff:192.0.2.7;" - CNAMEs typed, addresses bare.
    if not isinstance(results, str) or not results or results == "-":
        return
    answers: list[dict[str, str]] = []
    addresses: list[str] = []
    for item in results.split(";"):
        item = item.strip()
        if not item:
            continue
        if item.startswith("type:"):
            parts = item.split()
            if len(parts) >= 3:
                answers.append({"type": DNS_TYPES.get(parts[1], parts[1]), "data": parts[2]})
            continue
        address = _ip(item)
        if address:
            addresses.append(address)
            answers.append({"type": "AAAA" if ":" in address else "A", "data": address})
    _put(document, "dns.answers", answers or None)
    _put(document, "dns.resolved_ip", addresses or None)


def _system(document: dict[str, Any], code: str, data: dict[str, Any]) -> None:
    if code in ("7036", "7040"):
        # Service Control Manager writes these with unnamed strings: name, then state.
        _put(document, "service.name", _present(data.get("param1")))
        if code == "7036":
            _put(document, "service.state", _present(data.get("param2")))
    elif code == "7045":
        _put(document, "service.type", _present(data.get("ServiceType")))


def _powershell_classic(
    document: dict[str, Any], winlog: dict[str, Any], code: str, data: dict[str, Any]
) -> None:
    # Engine, provider and pipeline events carry a "\tKey=Value\r\n\t..." details block;
    # a value may span lines (a multi-line command), so only "\n\t" starts a new detail.
    details = data.get("param2" if code == "800" else "param3")
    if isinstance(details, str):
        for line in details.split("\n\t"):
            key, separator, value = line.strip("\t\r\n").partition("=")
            value = value.strip("\r\n\t")
            if separator and key.isidentifier() and value:
                _add_event_data(winlog, data, key, value)
    _powershell_fields(document, data)
    _put(document, "powershell.command.value", _present(data.get("CommandLine")))


def _powershell_operational(
    document: dict[str, Any], winlog: dict[str, Any], data: dict[str, Any]
) -> None:
    context_info = data.get("ContextInfo")
    if isinstance(context_info, str):
        # 4103's "        Host Application = powershell.exe ..." lines.
        for match in POWERSHELL_CONTEXT_LINE.finditer(context_info):
            key = match.group(1).replace(" ", "")
            if key.endswith("ID"):  # "Host ID" -> HostId, the name classic events use
                key = key[:-2] + "Id"
            if match.group(2):
                _add_event_data(winlog, data, key, match.group(2))
    _powershell_fields(document, data)
    get = data.get
    _put(document, "powershell.file.script_block_text", _present(get("ScriptBlockText")))
    _put(document, "powershell.file.script_block_id", _present(get("ScriptBlockId")))
    # Sigma maps 4103's Payload onto the same field as 4104's script block text.
    _put(document, "powershell.file.script_block_text", _present(get("Payload")))
    _put(document, "powershell.sequence", _integer(get("MessageNumber")))
    _put(document, "powershell.total", _integer(get("MessageTotal")))
    _put_file_path(document, _present(get("Path")))


def _powershell_fields(document: dict[str, Any], data: dict[str, Any]) -> None:
    get = data.get
    for key, field in POWERSHELL_FIELDS:
        _put(document, field, _present(get(key)))
    _put(document, "powershell.sequence", _integer(get("DetailSequence")))
    _put(document, "powershell.total", _integer(get("DetailTotal")))
    _put(document, "event.sequence", _integer(get("SequenceNumber")))
    host_application = _present(get("HostApplication"))
    if host_application:
        _put_command_line(document, "process", host_application)
    _put_file_path(document, _present(get("ScriptName")))
    account = _present(get("UserId") or get("User"))
    if account:
        _set_user(document, _account_user(account))


def _common_fields(
    document: dict[str, Any],
    winlog: dict[str, Any],
    data: dict[str, Any],
    user_data: dict[str, Any],
    kind: str | None,
) -> None:
    """The event data fields Sigma's ECS mapping names, wherever they occur; never overwrites."""
    get = data.get
    keys = data.keys()
    if "user" not in document:
        user = None
        if _present(get("SubjectUserName")) or _present(get("SubjectUserSid")):
            subject = (get("SubjectUserSid"), get("SubjectUserName"), get("SubjectDomainName"))
            user = _user_fields(*subject)
        elif _present(user_data.get("SubjectUserName")):
            user = _user_fields(
                user_data.get("SubjectUserSid"),
                user_data.get("SubjectUserName"),
                user_data.get("SubjectDomainName"),
            )
        elif _present(get("User")):
            user = _account_user(get("User"))
        elif _present(get("AccountName")):
            user = _user_fields(None, get("AccountName"), get("AccountDomain"))
        # Sysmon's own UserID is always its service account, never the actor.
        if user is None and kind != SYSMON:
            identifier = _field(winlog, "user", "identifier")
            user = {"id": identifier} if isinstance(identifier, str) and identifier else None
        _set_user(document, user)
    if "logon" not in winlog and keys & LOGON_KEYS:
        logon_id = get("SubjectLogonId") or get("TargetLogonId") or get("LogonID")
        _put(winlog, "logon.id", _present(logon_id))

    if keys & PROCESS_KEYS:
        _process_fields(document, data, kind)
    if keys & FILE_KEYS:
        _put_file_path(document, _present(
            get("TargetFilename") or get("ImageLoaded") or get("Device") or get("FileName")
        ))  # fmt: skip
        _put(document, "file.name", _present(get("PipeName")))
        signed = get("Signed")
        if signed in ("true", "false"):
            _put(document, "file.code_signature.signed", signed == "true")
        _put(document, "file.code_signature.subject_name", _present(get("Signature")))
        signature_status = _present(get("SignatureStatus"))
        if signature_status:
            _put(document, "file.code_signature.status", signature_status)
            _put(document, "file.code_signature.valid", signature_status == "Valid")
    if keys & NETWORK_KEYS:
        _put(document, "source.ip", _ip(
            get("SourceIp") or get("IpAddress") or get("SourceAddress") or get("ClientAddress")
        ))  # fmt: skip
        _put(document, "source.port", _port(get("SourcePort") or get("IpPort")))
        _put(document, "source.domain", _present(
            get("SourceHostname") or get("WorkstationName") or get("ClientName")
        ))  # fmt: skip
        _put(document, "destination.ip", _ip(get("DestinationIp") or get("DestAddress")))
        _put(document, "destination.port", _port(get("DestinationPort") or get("DestPort")))
        _put(document, "destination.domain", _present(get("DestinationHostname")))
        _put(document, "dns.question.name", _present(get("QueryName")))
    _put(document, "service.name", _present(get("ServiceName")))


def _process_fields(document: dict[str, Any], data: dict[str, Any], kind: str | None) -> None:
    get = data.get
    _put(document, "process.entity_id", _present(
        get("ProcessGuid") or get("SourceProcessGuid") or get("SourceProcessGUID")
    ))  # fmt: skip
    _put(document, "process.pid", _pid(get("ProcessId") or get("SourceProcessId")))
    _put(document, "process.thread.id", _pid(get("SourceThreadId")))
    _put_executable(
        document,
        "process",
        get("Image")
        or get("SourceImage")
        or get("ProcessName")
        or get("Application")
        or get("Destination"),
    )
    # Classic PowerShell's CommandLine is the pipeline's command, not a process's.
    if kind != POWERSHELL:
        command_line = _present(get("CommandLine"))
        if command_line:
            _put_command_line(document, "process", command_line)
    _put(document, "process.working_directory", _present(get("CurrentDirectory")))
    _put(document, "process.parent.entity_id", _present(get("ParentProcessGuid")))
    _put(document, "process.parent.pid", _pid(get("ParentProcessId")))
    _put_executable(document, "process.parent", get("ParentImage"))
    parent_command_line = _present(get("ParentCommandLine"))
    if parent_command_line:
        _put_command_line(document, "process.parent", parent_command_line)


# --- small field helpers ----------------------------------------------------------------


def _put(document: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a dotted field unless it is set already; None sets nothing and creates nothing."""
    if value is None:
        return
    path = _PATHS.get(dotted)
    if path is None:
        path = _PATHS[dotted] = tuple(dotted.split("."))
    target = document
    for part in path[:-1]:
        child = target.get(part)
        if child is None:
            child = target[part] = {}
        elif not isinstance(child, dict):
            return  # a pass-through document with a non-object here: leave it alone
        target = child
    target.setdefault(path[-1], value)


_PATHS: dict[str, tuple[str, ...]] = {}


def _field(document: dict[str, Any], *path: str) -> Any:
    value: Any = document
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _present(value: Any) -> Any:
    return None if value is None or value == "" or value == "-" else value


def _lower(value: Any) -> str | None:
    value = _present(value)
    return value.lower() if isinstance(value, str) else None


def _integer(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _pid(value: Any, keep_zero: bool = False) -> int | None:
    """A process id (or status code) written in decimal or as 0x-hex; 0 means none."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = int(text, 16) if text[:2].lower() == "0x" else int(text)
        except ValueError:
            return None
    else:
        return None
    if number == 0 and not keep_zero:
        return None
    return number


def _port(value: Any) -> int | None:
    number = _integer(value)
    return number if number is not None and 0 < number < 65536 else None


def _ip(value: Any) -> str | None:
    if not isinstance(value, str) or not value or value == "-":
        return None
    text = value.strip()
    if text.startswith("::ffff:") and "." in text:
        text = text[7:]  # IPv4-mapped, as Windows writes IPv4 peers of dual-stack sockets
    text = text.split("%", 1)[0]  # an IPv6 zone index, which Elasticsearch refuses
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return None
    return text


def _hashes(value: Any) -> dict[str, str]:
    if not isinstance(value, str) or "=" not in value:
        return {}
    hashes = {}
    for item in value.split(","):
        name, _, digest = item.partition("=")
        digest = digest.strip().lower()
        if digest and digest.strip("0"):  # all zeros: Sysmon could not hash the file
            hashes[name.strip().lower()] = digest
    return hashes


def _user_fields(sid: Any, name: Any, domain: Any) -> dict[str, Any] | None:
    """user.id/name/domain from event data values, or None when they name no account."""
    sid = sid if isinstance(sid, str) and sid not in ABSENT else None
    name = name if isinstance(name, str) and name not in ABSENT else None
    if not (sid or name):
        return None
    user: dict[str, Any] = {}
    if sid:
        user["id"] = sid
    if name:
        # Kerberos events write user@REALM; Elastic keeps the part before the @.
        user["name"] = name.split("@", 1)[0] if "@" in name else name
    if isinstance(domain, str) and domain not in ABSENT:
        user["domain"] = domain
    return user


def _set_user(document: dict[str, Any], user: dict[str, Any] | None) -> None:
    if user and "user" not in document:
        document["user"] = user


def _set_user_role(document: dict[str, Any], role: str, user: dict[str, Any] | None) -> None:
    if user:
        _put(document, f"user.{role}", user)


def _account_user(account: Any) -> dict[str, Any] | None:
    """A DOMAIN\\name account as user fields."""
    if not isinstance(account, str):
        return None
    domain, separator, name = account.rpartition("\\")
    if separator:
        return _user_fields(None, name, domain)
    return _user_fields(None, account, None)


def _put_executable(document: dict[str, Any], process_path: str, executable: Any) -> None:
    executable = _present(executable)
    if not isinstance(executable, str):
        return
    process = _field(document, *process_path.split("."))
    if isinstance(process, dict) and "executable" in process:
        return
    _put(document, f"{process_path}.executable", executable)
    name = executable.rsplit("\\", 1)[-1]
    if name:
        _put(document, f"{process_path}.name", name)


def _put_command_line(document: dict[str, Any], process_path: str, command_line: str) -> None:
    process = _field(document, *process_path.split("."))
    if isinstance(process, dict) and "command_line" in process:
        return
    _put(document, f"{process_path}.command_line", command_line)
    args = _command_line_args(command_line)
    if args:
        _put(document, f"{process_path}.args", args)
        _put(document, f"{process_path}.args_count", len(args))


def _command_line_args(command_line: str) -> list[str]:
    """Split a command line the way CommandLineToArgvW does."""
    if '"' not in command_line:
        # Without quotes, backslashes are literal and only spaces and tabs separate.
        return [arg for arg in COMMAND_LINE_SPLIT.split(command_line) if arg]
    args: list[str] = []
    current: list[str] = []
    in_quotes = False
    started = False
    skip_quote = False
    for token in COMMAND_LINE_TOKEN.finditer(command_line):
        backslashes, blanks, text = token.groups()
        if backslashes is not None:  # a quote, after zero or more backslashes
            started = True
            current.append("\\" * (len(backslashes) // 2))
            if len(backslashes) % 2:
                current.append('"')  # an escaped quote
            elif skip_quote:
                skip_quote = False
            elif in_quotes and command_line.startswith('"', token.end()):
                current.append('"')  # "" inside quotes is a literal quote
                skip_quote = True
            else:
                in_quotes = not in_quotes
        elif blanks is not None:
            if in_quotes:
                current.append(blanks)
            elif started:
                args.append("".join(current))
                current = []
                started = False
        else:
            current.append(text)
            started = True
    if started:
        args.append("".join(current))
    return args


def _put_file_path(document: dict[str, Any], path: Any) -> None:
    if not isinstance(path, str) or isinstance(_field(document, "file", "path"), str):
        return
    _put(document, "file.path", path)
    directory, separator, name = path.rpartition("\\")
    if separator and name:
        _put(document, "file.name", name)
        _put(document, "file.directory", directory or None)
        stem, dot, extension = name.rpartition(".")
        if dot and stem and extension:
            _put(document, "file.extension", extension)


def _related(document: dict[str, Any]) -> None:
    if "related" in document:
        return
    related: dict[str, list[str]] = {}
    user = document.get("user")
    if isinstance(user, dict):
        names = [user.get("name")]
        for role in ("target", "effective"):
            if isinstance(user.get(role), dict):
                names.append(user[role].get("name"))
        _add_unique(related, "user", names)
    if "source" in document or "destination" in document or "dns" in document:
        ips = [_field(document, "source", "ip"), _field(document, "destination", "ip")]
        resolved = _field(document, "dns", "resolved_ip")
        if isinstance(resolved, list):
            ips.extend(resolved)
        _add_unique(related, "ip", ips)
    hashes: list[Any] = []
    for owner in ("process", "file"):
        section = document.get(owner)
        if isinstance(section, dict):
            if isinstance(section.get("hash"), dict):
                hashes.extend(section["hash"].values())
            if isinstance(section.get("pe"), dict):
                hashes.append(section["pe"].get("imphash"))
    _add_unique(related, "hash", hashes)
    if related:
        document["related"] = related


def _add_unique(related: dict[str, list[str]], key: str, values: list[Any]) -> None:
    unique: list[str] = []
    for value in values:
        if isinstance(value, str) and value and value not in unique:
            unique.append(value)
    if unique:
        related[key] = unique


FORMAT = LogFormat(
    name="windows",
    description="Windows events (EVTX records, Winlogbeat JSON, Get-WinEvent/nxlog JSON) in Winlogbeat's ECS layout",
    sniff=sniff,
    parse=parse,
    priority=30,
)
